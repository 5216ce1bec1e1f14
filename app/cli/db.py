"""`flask --app app db …`: the schema, migrated as the tables' owner, and the app role's grants.

Kept apart from `app.cli` because these commands alone connect as the owner
(`MIGRATION_DATABASE_URL`); everything else connects as `DATABASE_URL`.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app import context

db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema, as the tables' owner (MIGRATION_DATABASE_URL).

    With APP_DATABASE_ROLE set (PostgreSQL), then grant that role exactly its
    privileges (`app.store.privileges`), so tables added by a migration get theirs.
    """
    from sqlalchemy import create_engine, pool

    from app.store.migrate import upgrade
    from app.store.privileges import PrivilegeError, apply_grants

    settings = context.settings()
    url = settings.owner_database_url
    click.echo(f"Migrating {_redact_url(url)} to {revision} …")
    upgrade(url, revision)
    click.echo("Database is up to date.")
    role = settings.app_database_role
    if not role:
        _encrypt_seeds_left_in_clear()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        if engine.dialect.name != "postgresql":
            raise click.ClickException("APP_DATABASE_ROLE needs PostgreSQL")
        with engine.begin() as connection:
            apply_grants(connection, role)
    except PrivilegeError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()
    click.echo(f"Granted {role} the app's privileges (it owns nothing).")
    _encrypt_seeds_left_in_clear()  # as the app's role, now that it may


@db_cli.command("grants")
@click.argument("role")
def db_grants(role: str) -> None:
    """Print the SQL that gives ROLE the app's least privileges (PostgreSQL)."""
    from app.store.privileges import grant_statements

    for statement in grant_statements(role):
        click.echo(statement)


def _encrypt_seeds_left_in_clear() -> None:
    """TOTP seeds stored before they were encrypted (before migration 0008) are encrypted now."""
    from app.access.accounts import reencrypt_seeds

    with context.database().transaction() as session:
        changed = reencrypt_seeds(session, context.seed_cipher(), only_clear=True)
    if changed:
        click.echo(f"Encrypted {changed} TOTP seed(s) stored in clear.")


def _redact_url(url: str) -> str:
    """A database URL without its password, for output."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return (
            f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
        )
    return url
