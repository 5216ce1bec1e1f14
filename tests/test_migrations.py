"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from app.store.db import Base
from app.store.migrate import head_revision


def test_migrated_schema_matches_the_models(database_url):
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_revision() == head_revision()
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_0006_names_the_event_behind_every_subscription(app, client, db, database_url):
    """A row left without its event (there should be none) gets its chain's last change of it."""
    from alembic import command
    from sqlalchemy import select, text

    from app.store.migrate import alembic_config, upgrade
    from app.store.models import ConsentEvent, Subscription
    from tests.twilio_helpers import send_text

    for body in ("JOIN", "YES", "HELP"):
        send_text(client, "+14155550100", body)
    with db.transaction(write=False) as session:
        yes_event = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.intent == "confirm")
        ).scalar_one()
    db.dispose()
    command.downgrade(alembic_config(database_url), "0004")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(text("UPDATE subscriptions SET last_event_id = NULL"))
    engine.dispose()
    upgrade(database_url)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        assert connection.execute(select(Subscription.last_event_id)).scalar_one() == yes_event


def test_0008_keeps_existing_staff_and_their_sessions(tmp_path):
    """Accounts from before enrolment links keep working; their seeds wait (in clear) for
    `db upgrade` to encrypt them; the copy SQLite needs keeps every row and reference."""
    from alembic import command
    from sqlalchemy import text

    from app.store.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "0004")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff_users (id, email, role, password_hash, totp_secret, "
                "failed_logins, created_at) VALUES (1, 'old@example.com', 'admin', '$argon2id$x', "
                "'JBSWY3DPEHPK3PXP', 2, '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO staff_sessions (token_sha256, staff_id, second_factor_done, "
                "created_at, last_seen_at) VALUES ('a', 1, 1, '2026-01-01', '2026-01-01')"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        user = connection.execute(text("SELECT * FROM staff_users")).mappings().one()
        sessions = connection.execute(text("SELECT staff_id FROM staff_sessions")).scalars()
        assert list(sessions) == [1]
    assert user["totp_seed_encrypted"] == "JBSWY3DPEHPK3PXP" and user["enrolled_at"] is not None
    assert "failed_logins" not in user and "locked_until" not in user
    command.downgrade(config, "0004")
    command.upgrade(config, "head")
    engine.dispose()
