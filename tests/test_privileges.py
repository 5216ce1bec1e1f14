"""Least privilege on PostgreSQL (app/store/privileges.py): the app's role owns nothing.

Issue 12, finding 3: the service connected as the role that owns the tables,
and a table's owner can `ALTER TABLE … DISABLE TRIGGER`, then delete or rewrite
ledger events. Here a fresh database is owned by a non-superuser owner role;
`db upgrade` runs as that owner (MIGRATION_DATABASE_URL) and grants the app role
(APP_DATABASE_ROLE) its privileges. Connected as the app role the service still
works end to end (texts recorded, a reply sent, a status callback, retention and
erasure redaction, `ledger verify`), while every way around the triggers is
refused. PostgreSQL only: SQLite has no roles.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, pool, select, text
from sqlalchemy.exc import DBAPIError

from app.config import PROJECT_DIR
from app.privacy.retention import RetentionPolicy, run_retention
from app.store.db import utcnow
from app.store.models import ConsentEvent, OutboundMessage
from app.store.privileges import APP_PRIVILEGES, grant_statements
from tests.conftest import TEST_DATABASE_URL
from tests.conftest import make_test_app as _make_test_app
from tests.test_sender import RecordingGateway, make_sender
from tests.twilio_helpers import post_signed, send_text, status_params

# Every app of this module shares one database, whose key record names one suppression key.
SUPPRESSION_KEY = "privileges-test-suppression-key"


def make_test_app(database_url, tmp_path, **overrides):
    return _make_test_app(database_url, tmp_path, suppression_key=SUPPRESSION_KEY, **overrides)


postgresql_only = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL only (roles)")

PHONE = "+14155550100"


@pytest.fixture(scope="module")
def roles() -> Iterator[dict[str, str]]:
    """A database owned by a non-superuser owner role, migrated by `db upgrade` as that owner,
    and an app role that owns nothing. Dropped afterwards."""
    suffix = secrets.token_hex(4)
    owner, app_role, name = f"scg_owner_{suffix}", f"scg_app_{suffix}", f"scg_lp_{suffix}"
    base = make_url(TEST_DATABASE_URL)
    admin = create_engine(base, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE"))
        connection.execute(text(f"CREATE ROLE {app_role} LOGIN NOSUPERUSER NOCREATEROLE"))
        connection.execute(text(f'CREATE DATABASE "{name}" OWNER {owner}'))
    urls = {
        "owner": base.set(database=name, username=owner).render_as_string(hide_password=False),
        "app": base.set(database=name, username=app_role).render_as_string(hide_password=False),
        "role": app_role,
        "owner_role": owner,
    }
    try:
        yield urls
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f"DROP ROLE IF EXISTS {app_role}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {owner}"))
        admin.dispose()


@pytest.fixture(scope="module")
def migrated(roles, tmp_path_factory) -> dict[str, str]:
    """`flask --app app db upgrade` with DATABASE_URL as the app role, as the release step runs."""
    app = make_test_app(
        roles["app"],
        tmp_path_factory.mktemp("upgrade"),
        migration_database_url=roles["owner"],
        app_database_role=roles["role"],
    )
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    app.extensions["db"].dispose()
    assert result.exit_code == 0, result.output
    assert f"Granted {roles['role']}" in result.output
    return roles


def as_role(url: str, sql: str, **params) -> None:
    """Run `sql` in a transaction of its own, connected as the role in `url`."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()


def refused(url: str, sql: str, **params) -> str:
    """`sql` run as that role must fail; the database's reason."""
    with pytest.raises(DBAPIError) as failure:
        as_role(url, sql, **params)
    assert isinstance(failure.value.orig, psycopg.errors.InsufficientPrivilege), failure.value
    return str(failure.value.orig)


@postgresql_only
def test_the_app_role_owns_nothing_and_the_tables_belong_to_the_owner(migrated):
    engine = create_engine(migrated["owner"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        owners = dict(
            connection.execute(
                text("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'")
            ).all()
        )
        superuser = connection.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
    engine.dispose()
    assert superuser is False  # the owner is an ordinary role, as on a managed database
    assert set(owners) == set(APP_PRIVILEGES)  # every table has a decision in APP_PRIVILEGES
    assert set(owners.values()) == {migrated["owner_role"]}


@postgresql_only
def test_the_app_works_end_to_end_as_the_app_role(migrated, tmp_path):
    app = make_test_app(migrated["app"], tmp_path)
    db = app.extensions["db"]
    client = app.test_client()
    try:
        for body in ("JOIN", "YES", "HELP"):
            response, _ = send_text(client, PHONE, body)
            assert response.status_code == 200
        gateway = RecordingGateway()
        sender = make_sender(app, gateway)
        while sender.process_one():
            pass
        assert len(gateway.sent) == 3  # confirm request, welcome, help: replies sent
        with db.transaction(write=False) as session:
            sid = session.execute(
                select(OutboundMessage.twilio_sid).order_by(OutboundMessage.id).limit(1)
            ).scalar_one()
        callback = status_params(sid, "delivered")
        assert post_signed(client, "/twilio/status", callback).status_code == 200

        runner = app.test_cli_runner()
        assert (
            runner.invoke(args=["staff", "create", "o@example.com", "--role", "admin"]).exit_code
            == 0
        )
        assert runner.invoke(args=["api-token", "create", "lp"]).exit_code == 0

        # Retention as of 100 days from now: every body goes (column UPDATE to NULL).
        report = run_retention(db, RetentionPolicy(body_days=90), utcnow() + timedelta(days=100))
        assert report.bodies_redacted == 3 and report.receipts_deleted == 1
        send_text(client, "+14155550101", "JOIN")
        erased = runner.invoke(
            args=["erase", "+14155550101", "--reason", "ticket 5", "--keep-twilio-copies"]
        )
        assert erased.exit_code == 0, erased.output
        with db.transaction(write=False) as session:
            bodies = session.execute(select(ConsentEvent.body)).scalars().all()
        assert bodies and all(body is None for body in bodies)
        verified = runner.invoke(args=["ledger", "verify", "--quiet"])
        assert verified.exit_code == 0, verified.output
    finally:
        db.dispose()


@postgresql_only
def test_the_app_role_cannot_get_around_the_ledgers_guards(migrated, tmp_path):
    app_url = migrated["app"]
    app = make_test_app(app_url, tmp_path)
    send_text(app.test_client(), "+14155550102", "JOIN")
    app.extensions["db"].dispose()

    assert "must be owner" in refused(app_url, "ALTER TABLE consent_events DISABLE TRIGGER USER")
    assert "must be owner" in refused(
        app_url, "DROP TRIGGER consent_events_refuse_delete ON consent_events"
    )
    refused(app_url, "SET session_replication_role = replica")
    refused(app_url, "DELETE FROM consent_events")
    refused(app_url, "TRUNCATE consent_events")
    refused(app_url, "UPDATE consent_events SET intent = 'opt_in'")
    refused(app_url, "UPDATE consent_events SET status_after = 'active', changes = '[]'")
    refused(app_url, "UPDATE ledger_texts SET body = 'edited'")
    refused(app_url, "DELETE FROM ledger_checkpoints")
    refused(app_url, "DELETE FROM staff_audit")
    refused(app_url, "DELETE FROM subscriptions")
    refused(app_url, "DELETE FROM suppressions")
    refused(app_url, "UPDATE subscriptions SET subscriber_id = subscriber_id")
    refused(app_url, "CREATE TABLE evil (id int)")
    refused(app_url, "ALTER TABLE subscriptions DROP CONSTRAINT fk_subscriptions_last_event_id")
    # The personal columns it may update, the trigger lets only be set to NULL.
    with pytest.raises(DBAPIError, match="append-only"):
        as_role(app_url, "UPDATE consent_events SET body = 'STOP'")


@postgresql_only
def test_the_owner_could_which_is_why_the_app_is_not_the_owner(migrated, tmp_path):
    """The finding itself, as the owner: triggers off, an event deleted (then rolled back)."""
    app = make_test_app(migrated["app"], tmp_path)
    _, sid = send_text(app.test_client(), "+14155550103", "HELP")
    with app.extensions["db"].transaction(write=False) as session:
        event_id = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.message_sid == sid)
        ).scalar_one()
    app.extensions["db"].dispose()
    refused(migrated["app"], "DELETE FROM consent_events WHERE id = :id", id=event_id)

    engine = create_engine(migrated["owner"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("ALTER TABLE consent_events DISABLE TRIGGER USER"))
        connection.execute(
            text("DELETE FROM outbound_messages WHERE event_id = :id"), {"id": event_id}
        )
        deleted = connection.execute(
            text("DELETE FROM consent_events WHERE id = :id"), {"id": event_id}
        ).rowcount
        transaction.rollback()
    engine.dispose()
    assert deleted == 1  # nothing stops the owner but detection (issue 12, parts 3 and 4)


@postgresql_only
def test_db_grants_prints_the_statements_and_refuses_the_owner(migrated, tmp_path):
    app = make_test_app(migrated["app"], tmp_path)
    printed = app.test_cli_runner().invoke(args=["db", "grants", "scg_app"]).output.splitlines()
    assert printed == grant_statements("scg_app")
    owner_as_app = make_test_app(
        migrated["owner"],
        tmp_path / "owner",
        migration_database_url=migrated["owner"],
        app_database_role=migrated["owner_role"],
    )
    result = owner_as_app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code != 0 and "owns the tables" in result.output
    app.extensions["db"].dispose()
    owner_as_app.extensions["db"].dispose()


def test_the_deployment_guide_lists_exactly_these_grants():
    guide = (PROJECT_DIR / "docs" / "deployment.md").read_text()
    block = guide.split("flask --app app db grants scg_app` prints them:", 1)[1]
    block = block.split("```sql\n", 1)[1].split("```", 1)[0]
    assert block.strip().splitlines() == grant_statements("scg_app")
