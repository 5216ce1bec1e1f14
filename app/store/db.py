"""Engine, sessions and the declarative base.

One `Database` per app, built in `create_app` and kept in `app.extensions["db"]`.
Transactions begin and end at the edges (blueprints, CLI commands, the worker
loop) with `with database.transaction() as session:`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import QueuePool


def utcnow() -> datetime:
    """Timezone-aware now in UTC; the one clock every model default uses."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every model."""


class Database:
    """An engine and a session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._hot_engine: Engine | None = None
        # SHA-256s of disclosure and reply texts known to be in ledger_texts (append-only),
        # so the hot path does not insert them again on every text.
        self.known_texts: set[str] = set()
        self._writer_thread_lock = threading.Lock()
        self._writer_turn = threading.local()
        self._writer_file_lock = _open_lock_file(url)
        self._number_locks_dir = _number_locks_dir(url)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def session(self) -> Session:
        """A new session; the caller owns its transaction."""
        return self.sessionmaker()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        On SQLite a writing transaction starts with BEGIN IMMEDIATE so that two
        writers queue on the database lock at the start instead of failing later
        when a reader tries to upgrade to a writer.
        """
        with self.writer_lock() if write else nullcontext():
            session = self.sessionmaker()
            try:
                if write and self.is_sqlite:
                    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """On SQLite, take the writers' turn: one writer at a time, handed over at once.

        SQLite lets one writer in at a time; the others poll, sleeping longer and
        longer between tries, so under load the database sits idle while writers
        sleep. Writers queue here instead: a thread lock within the process and an
        flock(2) on a file beside the database across processes, both of which
        wake the next writer the moment the last one is done. PostgreSQL needs
        none of this.
        """
        if self._writer_file_lock is None or getattr(self._writer_turn, "held", False):
            yield  # PostgreSQL, or this thread already has the turn
            return
        with self._writer_thread_lock:
            fcntl.flock(self._writer_file_lock, fcntl.LOCK_EX)
            self._writer_turn.held = True
            try:
                yield
            finally:
                self._writer_turn.held = False
                fcntl.flock(self._writer_file_lock, fcntl.LOCK_UN)

    @contextmanager
    def number_guard(self, phone: str, *, exclusive: bool) -> Iterator[None]:
        """On SQLite, order a number's opt-outs and the sends to it, across processes.

        The sender holds it shared from its last consent check until Twilio has
        answered; every path that can opt the number out (an inbound text, a
        carrier opt-out, an erasure, a staff decision) holds it exclusively while
        it records that. So an opt-out commits either before the check (and the
        reply is suppressed) or after the send, never in between. Numbers share
        `NUMBER_LOCK_STRIPES` lock files (flock(2), one open file per holder, so
        threads of one process do not share a lock). PostgreSQL locks the
        subscriber row instead (`app.outbox.hold`); this is a no-op there.
        """
        if self._number_locks_dir is None or not phone:
            yield
            return
        stripe = zlib.crc32(phone.encode()) % NUMBER_LOCK_STRIPES
        with open(os.path.join(self._number_locks_dir, str(stripe)), "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield

    @property
    def hot_engine(self) -> Engine:
        """The inbound hot path's engine: on PostgreSQL, autocommit and no ping per checkout.

        Each statement of `app.store.pg_hot_store` is its own transaction (no BEGIN or
        COMMIT round trips). A ping would cost a round trip per request; instead a
        dead connection fails one statement, the pool is emptied
        (`hot_connection`), and the webhook tries once more on a new connection
        (503 if that fails too, so Twilio retries).
        """
        if self._hot_engine is None:
            self._hot_engine = (
                self.engine
                if self.is_sqlite
                else make_engine(self.url, pre_ping=False, autocommit=True)
            )
        return self._hot_engine

    @contextmanager
    def hot_connection(self) -> Iterator[Any]:
        """A driver connection (psycopg or sqlite3) for raw SQL; rolled back on error."""
        pooled = self.hot_engine.raw_connection()
        connection = pooled.driver_connection
        try:
            yield connection
        except BaseException as error:
            try:
                connection.rollback()
            except Exception:
                pooled.invalidate(error if isinstance(error, Exception) else None)
            else:
                if _is_disconnect(error):
                    pooled.invalidate(error)
            if _is_disconnect(error):
                # The server went away: every idle connection in the pool is dead too.
                self.hot_engine.dispose()
            raise
        finally:
            pooled.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer_file_lock is not None:
            self._writer_file_lock.close()
            self._writer_file_lock = None
        if self._hot_engine is not None and self._hot_engine is not self.engine:
            self._hot_engine.dispose()


NUMBER_LOCK_STRIPES = 1024


def _number_locks_dir(url: str) -> str | None:
    """The directory of the per-number lock files beside a SQLite database (else None)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = url[len("sqlite:///") :] + ".number-locks"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path


def _open_lock_file(url: str):
    """The file SQLite writers flock (None for PostgreSQL or an in-memory database)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = url[len("sqlite:///") :] + ".writer-lock"
    try:
        return open(path, "a+b")  # noqa: SIM115 - held for the life of the Database
    except OSError:
        return None  # the database cannot be opened either; that error is reported there


def _is_disconnect(error: BaseException) -> bool:
    """Did the connection itself fail (server gone, socket closed)?"""
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def make_engine(
    url: str,
    *,
    echo: bool = False,
    pre_ping: bool = True,
    autocommit: bool = False,
    pool_size: int = 5,
    max_overflow: int = 5,
) -> Engine:
    """Create an engine with the per-backend settings the service relies on.

    Engines are made inside `create_app`, in each gunicorn worker after the fork,
    so pooled connections are never shared between processes.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 5, "check_same_thread": False},
            poolclass=QueuePool,
            pool_size=8,
            max_overflow=8,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=pre_ping,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=3,
        connect_args={"connect_timeout": 3},
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and foreign keys; transactions controlled by SQLAlchemy.

    pysqlite's own transaction handling is turned off so that `BEGIN IMMEDIATE`
    in `Database.transaction` is the only BEGIN (the documented SQLAlchemy recipe).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # pragma: no cover - exercised by every test
        # Deferred BEGIN for readers; writers ask for IMMEDIATE through an execution option.
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())
