"""Test data for the sending rules: subscribers seeded in bulk, a token that may send."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from app.access.tokens import EVENTS_READ, MESSAGES_SEND, create_api_token
from app.store.send_models import RecipientProfile
from bench.consents import seed_consents

SEEDED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def seed_subscribers(
    db,
    phones,
    *,
    program: str = "demo",
    status: str = "active",
    zip_code: str | None = None,
    state: str | None = None,
) -> dict[str, int]:
    """Subscribers with a subscription in `program`, each set by one ledger event
    (`bench.consents`: a real, verifiable ledger, written in bulk), and their profiles, for
    tests of thousands of numbers. Consent itself is tested through the webhook elsewhere.
    Returns `{phone: subscriber id}`."""
    phones = list(phones)
    with db.transaction() as session:
        ids = seed_consents(
            session.connection(), [(p, status) for p in phones], program=program, at=SEEDED_AT
        )
        if zip_code or state:
            session.execute(
                insert(RecipientProfile),
                [
                    {
                        "subscriber_id": ids[p],
                        "state": state,
                        "zip_code": zip_code,
                        "location_source": "import",
                        "updated_at": SEEDED_AT,
                    }
                    for p in phones
                ],
            )
    return ids


def send_token(db, scopes=(MESSAGES_SEND, EVENTS_READ)) -> str:
    """A token that may send, and read back what it sent (`GET /api/v1/messages`)."""
    with db.transaction() as session:
        _, plain = create_api_token(session, "sender", scopes)
    return plain


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
