"""Alembic's environment for framewatch: the store's SQLModel tables on the connection that
daemon.store.migrations.upgrade hands over (or on the URL given to the `alembic` command)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import daemon.store.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from daemon.store.migrations import include_object

config = context.config
target_metadata = SQLModel.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "give the database: alembic -x ... or set sqlalchemy.url"
    with create_engine(url).connect() as conn:
        _run(conn)
