"""app/health.py: /healthz (liveness and the database) and /readyz (migrations, sender)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from app.outbox.records import clear_heartbeat, record_heartbeat
from app.store.db import utcnow
from app.store.models import SenderHeartbeat
from app.web.health import code_head_revision
from tests.conftest import make_test_app


def beat(db, worker_id: str = "host:1", age_seconds: float = 0.0) -> None:
    with db.transaction() as session:
        record_heartbeat(session, worker_id, utcnow() - timedelta(seconds=age_seconds))


def test_healthz_is_ok_with_a_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_without_any_sender_is_not_ready_and_says_why(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"] == "ok"
    assert "no sender" in body["checks"]["sender"]


def test_readyz_with_a_recent_heartbeat_is_ready(client, db):
    beat(db)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "sender": "ok"},
    }


def test_readyz_with_a_stale_heartbeat_is_not_ready(client, db):
    beat(db, age_seconds=61)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "last heartbeat 61 s ago" in response.get_json()["checks"]["sender"]


def test_the_newest_of_several_heartbeats_counts(client, db):
    beat(db, "host:1", age_seconds=300)
    beat(db, "host:2", age_seconds=1)
    assert client.get("/readyz").status_code == 200


def test_a_cleanly_stopped_worker_no_longer_counts(client, db):
    beat(db)
    with db.transaction() as session:
        clear_heartbeat(session, "host:1")
        assert session.get(SenderHeartbeat, "host:1") is None
    assert client.get("/readyz").status_code == 503


def test_readyz_with_an_old_migration_is_not_ready(client, db):
    beat(db)
    with db.transaction() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = client.get("/readyz")
    finally:  # PostgreSQL's test database is shared by the run's tests
        with db.transaction() as session:
            session.execute(
                text("UPDATE alembic_version SET version_num = :head"),
                {"head": code_head_revision()},
            )
    assert response.status_code == 503
    migrations = response.get_json()["checks"]["migrations"]
    assert migrations.startswith(f"database at 0001, code at {code_head_revision()}")
    assert "db upgrade" in migrations


def test_readyz_without_a_schema_is_not_ready(database_url, tmp_path):
    app = make_test_app(f"sqlite:///{tmp_path / 'empty.sqlite3'}", tmp_path)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert "database at no revision" in response.get_json()["checks"]["migrations"]
    finally:
        app.extensions["db"].dispose()


def test_the_sender_check_can_be_turned_off(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, ready_sender_max_age_seconds=0.0)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["checks"]["sender"].startswith("not checked")
    finally:
        app.extensions["db"].dispose()


def test_an_unreachable_database_fails_both_checks(tmp_path):
    app = make_test_app(
        "postgresql+psycopg://nobody@127.0.0.1:9/none", tmp_path, ready_sender_max_age_seconds=0.0
    )
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 503
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["database"] == "unreachable"
    finally:
        app.extensions["db"].dispose()
