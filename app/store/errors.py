"""Database errors as the layers above see them: three kinds, whatever the driver.

The inbound hot path talks to psycopg and sqlite3 directly (`app.store.hot_path`),
the rest through SQLAlchemy; the edges must not care which. `translate_errors`
maps every driver's and SQLAlchemy's exceptions onto these.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError


class StoreError(Exception):
    """Something the database refused or could not do."""


class DuplicateKey(StoreError):
    """A unique index refused the write (e.g. a MessageSid recorded concurrently)."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached or failed; the caller may try again later."""


class ConnectionLost(DatabaseUnavailable):
    """A pooled connection died (the server restarted); a new connection may well work."""


_INTEGRITY = (psycopg.IntegrityError, sqlite3.IntegrityError, IntegrityError)
# Raised by a statement on an established connection. Failing to connect at all is
# SQLAlchemy's OperationalError from the pool: unavailable, not lost.
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)
_UNAVAILABLE = (psycopg.Error, sqlite3.Error, DBAPIError)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver and SQLAlchemy errors as `DuplicateKey`, `ConnectionLost` or
    `DatabaseUnavailable` (the original is kept as `__cause__`)."""
    try:
        yield
    except _INTEGRITY as error:
        raise DuplicateKey(str(error)) from error
    except _LOST as error:
        raise ConnectionLost(str(error)) from error
    except _UNAVAILABLE as error:
        raise DatabaseUnavailable(str(error)) from error
