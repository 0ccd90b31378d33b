"""The store's engine: SQLite with WAL, a busy timeout and immediate write transactions, or
PostgreSQL; opened at the newest schema revision. SQLAlchemy Core only, no ORM: a command that
only reads (`framewatch events`) opens the store without importing sqlmodel and its ORM
(bench/RESULTS.md, store: what that import costs).

`open_read_only` is for a process that must never write (`framewatch serve`): no migration, no
file created, connections the database itself keeps from writing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

# Execution option of a connection that only reads: on SQLite its transactions BEGIN DEFERRED,
# so it reads one WAL snapshot without taking the write lock, and writers never wait for it.
READ_ONLY = "framewatch_read_only"


class StoreUnavailable(Exception):
    """The store cannot be opened where it is configured (its folder cannot be made or used); the
    message is one line for a person (the CLI prints it and exits with EXIT_STORE)."""


def make_engine(url: str) -> Engine:
    """An engine for the store URL; SQLite files get WAL, a busy timeout and immediate transactions."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot use the store's folder {folder}: "
                    + ("not a folder" if folder.exists() else (exc.strerror or str(exc)).lower())
                ) from None
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


class ReadOnlyStoreError(RuntimeError):
    """A store cannot be opened read-only: missing, unreadable, or not at this framewatch's schema
    revision (a reader never migrates). The message is one line for a person."""


def open_read_only(url: str) -> Engine:
    """An engine over an existing store at the newest revision whose connections cannot write:
    SQLite opened with `mode=ro` (and `immutable=1` when no writer has it open, see
    _connect_read_only), PostgreSQL with `default_transaction_read_only`. Nothing is created or
    migrated; ReadOnlyStoreError says why a store cannot be read."""
    from daemon.store.migrations import current, head

    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:":
            raise ReadOnlyStoreError("a read-only store needs a database file, not :memory:")
        if not os.path.isfile(path):
            raise ReadOnlyStoreError(f"no store at {path} (a read-only open creates none)")
        where = path
        engine = create_engine(
            "sqlite://",
            creator=lambda: _connect_read_only(path),
            # A connection per transaction: each decides anew whether a writer has the store
            # open (see _connect_read_only), and none keeps an immutable view for long.
            poolclass=NullPool,
        )
        _sqlite_setup(engine, writable=False)
    else:
        try:
            where = make_url(url).render_as_string(hide_password=True)
        except exc.ArgumentError:
            raise ReadOnlyStoreError("storage.url is not a database URL") from None
        engine = create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    try:
        with read_only(engine) as conn, conn.begin():
            found = current(conn)
    except exc.DBAPIError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise ReadOnlyStoreError(f"cannot read the store at {where}: {reason}") from None
    target = head()
    if found != target:
        engine.dispose()
        if found is not None and found > target:
            raise ReadOnlyStoreError(
                f"the store at {where} has schema revision {found}, newer than this framewatch "
                f"knows ({target}): upgrade framewatch"
            )
        raise ReadOnlyStoreError(
            f"the store at {where} has schema revision {found or 'none'}, this framewatch reads "
            f"{target}; a read-only open never migrates: run a command that writes (framewatch "
            "run or analyze) once to upgrade it"
        )
    return engine


def _connect_read_only(path: str) -> sqlite3.Connection:
    """A SQLite connection that cannot write. With a -wal file present a writer has (or had) the
    store open, and SQLite reads through its WAL and shared-memory index (mode=ro). Without one,
    reading a WAL database with mode=ro makes SQLite create the -wal and -shm files, which a
    read-only folder forbids ("attempt to write a readonly database") and which, created by
    another user, would lock the daemon out of them later: immutable=1 reads the file as it is,
    without locks or side files. A writer that starts while such a connection is open (for one
    transaction: NullPool) writes to its own WAL, which this connection does not see; only its
    checkpoint, after about 1000 pages, touches the file being read, so a read racing it could
    see a page mid-change. The next transaction finds the -wal file and reads safely."""
    mode = "ro" if os.path.exists(path + "-wal") else "ro&immutable=1"
    uri = f"file:{quote(os.path.abspath(path))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)


def read_only(engine: Engine) -> Connection:
    """A connection whose transactions only read (see READ_ONLY)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _sqlite_setup(engine: Engine, writable: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defer the write lock,
        # which turns concurrent read-then-write into "database is locked" instead of waiting).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if writable:  # the writers made it WAL; a reader cannot change the journal mode
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        deferred = not writable or conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")
