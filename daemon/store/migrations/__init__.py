"""Schema versions of the store, managed with Alembic on SQLite and PostgreSQL alike.

`upgrade(engine)` runs on every Store start and costs one query when the database is current; a
database behind (or empty) is upgraded under a lock, so several boxes starting at once against
one PostgreSQL migrate it once. A database that framewatch created before Alembic managed the
schema (tables, no `alembic_version`) holds exactly the first revision's schema: it is stamped
with that revision and upgraded from there. How to add a revision: README, "Schema changes".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
# The schema `SQLModel.metadata.create_all` made before Alembic: stamped on such databases.
BASELINE = "0001"
# Any constant: the PostgreSQL advisory lock that serialises migrations across boxes.
_LOCK_KEY = 0x6677_6D69  # "fwmi"
# The newest revision. Knowing it without Alembic spares every command (status, events, ...)
# importing Alembic to learn that the database is current; a test checks it against Alembic's
# own reading of versions/, so a new revision that does not move it fails the suite.
HEAD = "0007"


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """What autogenerate compares: the SQLModel tables. The search indexes (revisions 0002 and
    0005: FTS5 tables and their shadow tables, GIN expression indexes) are not in the metadata
    and must not be proposed for removal."""
    return not (
        reflected
        and compare_to is None
        and name is not None
        and (
            name.startswith(("event_fts", "speech_fts"))
            or name in ("event_search_idx", "speech_search_idx")
        )
    )


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    return HEAD


def head_from_scripts() -> str | None:
    """The newest revision as Alembic reads it from the versions folder."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(conn: Connection) -> str | None:
    """The database's revision; None when Alembic never ran on it."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()  # type: ignore[no-any-return]


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision; nothing to do (one query) when it is there."""
    from sqlalchemy import inspect

    target = head()
    with engine.connect() as conn:
        if current(conn) == target:
            return
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held to the end of this transaction; SQLite's BEGIN IMMEDIATE already serialises.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
        found = current(conn)
        if found == target:
            return  # another box migrated while we waited for the lock
        cfg = alembic_config(conn)
        if found is None and inspect(conn).has_table("recording"):
            log.info("schema_adopted", revision=BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
        log.info("schema_upgraded", from_revision=found, to_revision=target)
