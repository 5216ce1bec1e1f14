"""Commands for staff accounts, API tokens and the keys that protect them (`flask --app app …`).

No command prints a password or a TOTP seed: an account is set up by its owner
through the enrolment link `staff create` and `staff reset` print.
"""

from __future__ import annotations

import os

import click
from flask.cli import AppGroup

from app import context
from app.access.tokens import DEFAULT_SCOPES, SCOPES
from app.store.db import utcnow

staff_cli = AppGroup("staff", help="Staff accounts for the console.")
api_token_cli = AppGroup("api-token", help="API bearer tokens.")
suppression_cli = AppGroup("suppression", help="The key of the suppression list's hashes.")
GROUPS = (staff_cli, api_token_cli, suppression_cli)


def _base_url() -> str:
    """Where staff open the console: PUBLIC_BASE_URL, else the local `make run` address."""
    return (
        context.settings().public_base_url or f"http://127.0.0.1:{os.environ.get('PORT', '5000')}"
    )


def _operator() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'}"


def _issue_link(session, user, now) -> str:
    from app.access.audit import ENROL_LINK, record_access
    from app.access.enrolment import enrol_url, issue_link
    from app.store.models import ENROL_CREDENTIALS

    hours = context.settings().staff_enrol_hours
    token = issue_link(
        session, user, purpose=ENROL_CREDENTIALS, now=now, hours=hours, created_by=_operator()
    )
    record_access(
        session,
        staff=None,
        staff_email=_operator(),
        action=ENROL_LINK,
        at=now,
        target=user.email,
        query={"expires_in_hours": hours},
    )
    return enrol_url(_base_url(), token)


@staff_cli.command("create")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["viewer", "compliance", "admin"]),
    required=True,
    help="viewer: statuses and counts, masked numbers; compliance: full numbers, export, "
    "review; admin: also accounts and tokens.",
)
def staff_create(email: str, role: str) -> None:
    """Create a staff account; its single-use enrolment link is printed last (`enrol: URL`)."""
    from app.access.accounts import AccountError, create_account
    from app.access.audit import STAFF_CREATE, record_access

    now = utcnow()
    try:
        with context.database().transaction() as session:
            user = create_account(session, email, role, now)
            record_access(
                session,
                staff=None,
                staff_email=_operator(),
                action=STAFF_CREATE,
                at=now,
                target=user.email,
                query={"role": role},
            )
            link = _issue_link(session, user, now)
    except AccountError as error:
        raise click.ClickException(str(error)) from error
    hours = context.settings().staff_enrol_hours
    click.echo(
        f"created {role} account {user.email}. Send them this link over a channel you trust: "
        f"with it they set their own password{' and second factor' if role != 'viewer' else ''}."
        f" It works once, within {hours:g} hours."
    )
    click.echo(f"enrol: {link}")


@staff_cli.command("reset")
@click.argument("email")
def staff_reset(email: str) -> None:
    """Stop an account's password and second factor; print a new enrolment link (last)."""
    from app.access.accounts import find_user, revoke_credentials
    from app.access.audit import STAFF_UPDATE, record_access

    now = utcnow()
    with context.database().transaction() as session:
        user = find_user(session, email)
        if user is None:
            raise click.ClickException(f"no account for {email}")
        revoke_credentials(session, user)
        record_access(
            session,
            staff=None,
            staff_email=_operator(),
            action=STAFF_UPDATE,
            at=now,
            target=user.email,
            query={"change": "reset"},
        )
        link = _issue_link(session, user, now)
    click.echo(f"{user.email}: credentials stopped, every session ended. New link, works once:")
    click.echo(f"enrol: {link}")


@staff_cli.command("rekey-totp")
def staff_rekey_totp() -> None:
    """Encrypt every TOTP seed under TOTP_ENCRYPTION_KEY (after a new key; see deployment)."""
    from app.access.accounts import reencrypt_seeds

    with context.database().transaction() as session:
        changed = reencrypt_seeds(session, context.seed_cipher())
    click.echo(
        f"{changed} TOTP seed(s) encrypted under TOTP_ENCRYPTION_KEY; "
        "TOTP_ENCRYPTION_KEY_PREVIOUS may now be removed"
    )


@api_token_cli.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help=f"What the token may do (repeat for several); default: {' '.join(DEFAULT_SCOPES)}.",
)
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True, max=3650),
    help="The token stops working after this many days; default: never.",
)
def api_token_create(name: str, scopes: tuple[str, ...], expires_days: float | None) -> None:
    """Create an API token; it is printed once, as the last line."""
    from app.access.audit import API_TOKEN_CREATE, record_access
    from app.access.tokens import TokenError, create_api_token

    now = utcnow()
    try:
        with context.database().transaction() as session:
            row, token = create_api_token(
                session,
                name,
                scopes or DEFAULT_SCOPES,
                expires_in_days=expires_days,
                created_by=_operator(),
                now=now,
            )
            record_access(
                session,
                staff=None,
                staff_email=_operator(),
                action=API_TOKEN_CREATE,
                at=now,
                target=f"token {row.id} ({row.name})",
                query={"scopes": row.scopes, "expires_in_days": expires_days},
            )
    except TokenError as error:
        raise click.ClickException(str(error)) from error
    expiry = f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
    click.echo(
        f"created API token {row.id} ({row.name}; scopes {row.scopes}{expiry}); "
        "store it now, it is not shown again:"
    )
    click.echo(token)


@suppression_cli.command("rekey")
def suppression_rekey() -> None:
    """Re-key: the list's key, wrapped under SUPPRESSION_KEY_PREVIOUS, is wrapped under
    SUPPRESSION_KEY instead. Every hash keeps matching; the old key opens nothing."""
    from app.ledger.suppression_keys import (
        SuppressionKeyError,
        fingerprint,
        open_record,
        record,
    )

    settings = context.settings()
    if not settings.suppression_key_previous:
        raise click.ClickException(
            "set SUPPRESSION_KEY to the new key and SUPPRESSION_KEY_PREVIOUS to the old one"
        )
    try:
        with context.database().transaction() as session:
            data_key = open_record(
                session,
                settings.suppression_key,
                settings.suppression_key_previous,
                create=False,
            )
            row = record(session, settings.suppression_key, data_key, utcnow())
    except SuppressionKeyError as error:
        raise click.ClickException(str(error)) from error
    assert row.fingerprint == fingerprint(settings.suppression_key)
    click.echo(
        "suppression key re-keyed: now under SUPPRESSION_KEY "
        f"(fingerprint {row.fingerprint[:12]}…); remove SUPPRESSION_KEY_PREVIOUS"
    )


@suppression_cli.command("adopt")
@click.option(
    "--from-secret-key",
    is_flag=True,
    help="The entries were made before SUPPRESSION_KEY was set: with the key derived from "
    "SECRET_KEY (as SECRET_KEY was then).",
)
def suppression_adopt(from_secret_key: bool) -> None:
    """Record the key that existing suppression entries were made with, under SUPPRESSION_KEY."""
    from app.ledger.suppression_keys import RECORD_NAME, legacy_key_from_secret, record
    from app.store.models import KeyRecord

    settings = context.settings()
    data_key = (
        legacy_key_from_secret(settings.secret_key)
        if from_secret_key
        else settings.suppression_key.encode("utf-8")
    )
    with context.database().transaction() as session:
        if session.get(KeyRecord, RECORD_NAME) is not None:
            raise click.ClickException(
                "a suppression key is already recorded; to change SUPPRESSION_KEY use "
                "`flask --app app suppression rekey`"
            )
        row = record(session, settings.suppression_key, data_key, utcnow())
    source = "derived from SECRET_KEY" if from_secret_key else "SUPPRESSION_KEY itself"
    click.echo(
        f"adopted the key the existing entries were made with ({source}), wrapped under "
        f"SUPPRESSION_KEY (fingerprint {row.fingerprint[:12]}…)"
    )
