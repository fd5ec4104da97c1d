"""Engine construction and the two kinds of transaction the service uses.

Writes run in one transaction that takes its locks up front: ``BEGIN IMMEDIATE`` on
SQLite (one writer at a time, across processes) and ``SELECT … FOR UPDATE`` row locks
on PostgreSQL. Reads use a plain (deferred) transaction so they never wait on writers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from registry_store.errors import UnavailableError
from registry_store.schema_revision import MIGRATIONS, SchemaRevision, schema_revision

__all__ = ["Database", "database_errors", "make_engine", "upgrade_database"]

_WRITE = "calabi_write"
_AFTER_COMMIT = "calabi_after_commit"
log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and explicit BEGIN control."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=pool_size
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=60000",
        "case_sensitive_like=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin_sqlite(conn: Any) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    # straight to the driver: BEGIN is on every read and write path, and SQLAlchemy's statement
    # machinery would cost more than SQLite takes to run it
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def database_errors() -> Iterator[None]:
    """The database failing (unreachable, no such file) as UnavailableError: one line naming the driver's error
    type, never the URL (for the operator commands, which have no HTTP error mapping)."""
    try:
        yield
    except OperationalError as exc:
        raise UnavailableError(f"the database is unreachable or failing ({type(exc.orig).__name__})") from exc


def upgrade_database(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


class Database:
    """Hands out read and write sessions over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._snapshot_engine = engine.execution_options(isolation_level="REPEATABLE READ") if self.is_postgres \
            else engine
        self._writer_queue: AbstractContextManager[object] = nullcontext() if self.is_postgres else threading.Lock()

    def schema_revision(self) -> SchemaRevision:
        """The database's Alembic revision against this code's head (one trivial query: also a reachability probe)."""
        with self.engine.connect() as connection:
            return schema_revision(MigrationContext.configure(connection).get_current_revision())

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read session; closing it ends the transaction and keeps loaded rows usable."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read session whose statements all see one snapshot of the database.

        PostgreSQL runs it REPEATABLE READ (its default, READ COMMITTED, snapshots each statement);
        SQLite's deferred read transaction already keeps the snapshot of its first read (WAL).
        """
        with Session(self._snapshot_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A Core connection in a read transaction (no ORM session: cheaper for a statement or two)."""
        with self.engine.connect() as connection:
            yield connection

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction, as ``write`` takes it; committed when the block ends
        without an exception."""
        callbacks: list[Callable[[], None]] = []
        with self._writer_queue, self._write_engine.begin() as connection:
            connection.info[_AFTER_COMMIT] = callbacks  # the pooled connection is ours alone until the block ends
            try:
                yield connection
            finally:
                connection.info.pop(_AFTER_COMMIT, None)
        _run_after_commit(callbacks)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed when the block ends without an exception.

        On SQLite the writers of this process queue on a lock before ``BEGIN IMMEDIATE``: the database
        still serialises writers (across processes too), the queue only spares them SQLite's busy-wait
        sleeps of up to 100 ms. Correctness never depends on it.
        """
        callbacks: list[Callable[[], None]] = []
        with self._writer_queue, Session(self._write_engine, expire_on_commit=False) as session:
            session.info[_AFTER_COMMIT] = callbacks
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
        _run_after_commit(callbacks)

    @staticmethod
    def after_commit(transaction: Session | Connection, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the write transaction of ``transaction`` (from ``write`` or ``write_connection``)
        has committed; never when it rolls back. Outside such a transaction it is dropped."""
        callbacks = transaction.info.get(_AFTER_COMMIT)
        if callbacks is not None:
            callbacks.append(callback)


def _run_after_commit(callbacks: list[Callable[[], None]]) -> None:
    """Run what waited for the commit; a failing callback (observability) never fails the committed write."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")
