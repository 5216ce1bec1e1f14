"""The inbound hot path's store: a driver connection and the store that suits it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from app.core.consent_plan import ConsentStore
from app.store.consent_sql import SqliteHotStore
from app.store.db import Database
from app.store.errors import translate_errors
from app.store.pg_hot_store import PostgresHotStore


def hot_store_for(connection, known_texts: set[str]) -> ConsentStore:
    """The hot-path store for a psycopg or sqlite3 connection."""
    if isinstance(connection, sqlite3.Connection):
        return SqliteHotStore(connection, known_texts)
    return PostgresHotStore(connection, known_texts)


@contextmanager
def open_hot_store(database: Database) -> Iterator[ConsentStore]:
    """A hot-path store on a connection of its own (the writers' turn held on SQLite).

    Driver errors leave as `app.store.errors` exceptions; after a failed write the
    cache of texts known to be stored is dropped, in case one was not after all.
    """
    with translate_errors():
        try:
            with database.writer_lock(), database.hot_connection() as connection:
                yield hot_store_for(connection, database.known_texts)
        except Exception:
            database.known_texts.clear()
            raise
