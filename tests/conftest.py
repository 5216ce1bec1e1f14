"""Fixtures: a fresh app and database per test, on SQLite and (when configured) PostgreSQL.

Database tests take the `app` fixture and so run once per backend: always on
SQLite, and on PostgreSQL too when `TEST_DATABASE_URL` is set (as `.ci/run`
does). The schema is built once per backend with the real Alembic migrations;
each test then gets an empty copy (a copied SQLite file, or truncated tables).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, pool, text

from app import create_app
from app.store.migrate import upgrade
from tests.twilio_helpers import PUBLIC_BASE_URL, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
if TEST_DATABASE_URL.startswith("postgresql://"):
    TEST_DATABASE_URL = "postgresql+psycopg://" + TEST_DATABASE_URL[len("postgresql://") :]

BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite database file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def fresh_postgresql_database(label: str) -> Iterator[str]:
    """A migrated PostgreSQL database of its own beside `TEST_DATABASE_URL`'s, dropped after.

    Named after it with `label` and a random suffix, so two runs on one machine never
    touch each other's data.
    """
    base = make_url(TEST_DATABASE_URL)
    name = f"{base.database}_{label}_{secrets.token_hex(4)}"
    admin = create_engine(base, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgresql_schema() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, migrated once, dropped at the end."""
    with fresh_postgresql_database("run") as url:
        yield url


def truncate_postgresql(url: str) -> None:
    """Empty every table; the ledger's append-only triggers are bypassed for this only."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        tables = connection.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ).scalars()
        names = ", ".join(f'"{name}"' for name in tables)
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> str:
    """An empty, migrated database for one test."""
    if request.param == "sqlite":
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgresql_schema")
    truncate_postgresql(url)
    return url


def make_test_app(database_url: str, tmp_path: Path, **overrides):
    """An app wired for tests: console backend, known auth token, public URL set."""
    config = {
        "env": {},
        "testing": True,
        "database_url": database_url,
        "instance_dir": tmp_path / "instance",
        "secret_key": "test-secret-key",
        "sms_backend": "console",
        "twilio_account_sid": TEST_ACCOUNT_SID,
        "twilio_auth_token": TEST_AUTH_TOKEN,
        "public_base_url": PUBLIC_BASE_URL,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(database_url, tmp_path):
    """A fresh app on a fresh database."""
    application = make_test_app(database_url, tmp_path)
    yield application
    application.extensions["db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def db(app):
    """The app's `Database` (sessions via `db.transaction()`)."""
    return app.extensions["db"]
