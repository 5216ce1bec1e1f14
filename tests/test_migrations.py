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
