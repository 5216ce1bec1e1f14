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
