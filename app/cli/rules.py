"""`flask --app app rules …`: the sending rules from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from flask.cli import AppGroup

from app import context
from app.consent.holds import HoldPolicy
from app.core.phones import parse_phone
from app.store.db import utcnow

rules_cli = AppGroup("rules", help="The sending rules (quiet hours, caps, consent).")


@rules_cli.command("explain")
@click.argument("phone")
@click.option("--program", "program_id", required=True, help="The program's id.")
@click.option("--at", "at_text", default=None, help="ISO 8601 moment (default: now).")
def rules_explain(phone: str, program_id: str, at_text: str | None) -> None:
    """Print, as JSON, the decision the send API would make for PHONE at that moment."""
    from app.sending.explain import explain

    e164 = parse_phone(phone)
    if e164 is None or not e164.startswith("+"):
        raise click.BadParameter(f"not a phone number: {phone!r}", param_hint="PHONE")
    program = context.programs().get(program_id)
    if program is None:
        raise click.BadParameter(f"no such program: {program_id!r}", param_hint="--program")
    at = utcnow()
    if at_text:
        try:
            at = datetime.fromisoformat(at_text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise click.BadParameter("must be ISO 8601", param_hint="--at") from exc
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    with context.database().transaction(write=False) as session:
        answer = explain(
            session,
            program=program,
            phone=e164,
            at=at.astimezone(UTC),
            key=context.settings().suppression_hmac_key,
            book=context.sending_rules(),
            holds=HoldPolicy(context.programs(), context.settings().review_holds_sends),
        )
    click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
