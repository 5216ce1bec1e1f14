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
    engine.dispose()
