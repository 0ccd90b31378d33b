"""One database for the store's parts: its engine (db.py) and its ORM transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlmodel import Session, SQLModel

from daemon.store.db import open_engine, open_read_only


class Database:
    """The engine at the newest schema revision and the transactions every store part runs.
    `read_only`: never migrate, and connections that cannot write (db.open_read_only)."""

    def __init__(self, url: str, read_only: bool = False):
        self.url = url
        self.read_only = read_only
        # Alembic, not create_all: an existing database is upgraded too (one query when current).
        self.engine = open_read_only(url) if read_only else open_engine(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def insert(self, table: type[SQLModel]) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL alike)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)
