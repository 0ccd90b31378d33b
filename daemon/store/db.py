"""The store's engine: SQLite with WAL, a busy timeout and immediate write transactions, or
PostgreSQL; opened at the newest schema revision. SQLAlchemy Core only, no ORM: a command that
only reads (`framewatch events`) opens the store without importing sqlmodel and its ORM
(bench/RESULTS.md, store: what that import costs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

# Execution option of a connection that only reads: on SQLite its transactions BEGIN DEFERRED,
# so it reads one WAL snapshot without taking the write lock, and writers never wait for it.
READ_ONLY = "framewatch_read_only"


def make_engine(url: str) -> Engine:
    """An engine for the store URL; SQLite files get WAL, a busy timeout and immediate transactions."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def open_engine(url: str) -> Engine:
    """make_engine, with the database brought to the newest revision (one query when it is)."""
    from daemon.store.migrations import upgrade

    engine = make_engine(url)
    upgrade(engine)  # includes the full-text index (revision 0002)
    return engine


def read_only(engine: Engine) -> Connection:
    """A connection whose transactions only read (see READ_ONLY)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defer the write lock,
        # which turns concurrent read-then-write into "database is locked" instead of waiting).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        deferred = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")
