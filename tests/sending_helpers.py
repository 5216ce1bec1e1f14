"""Test data for the sending rules: subscribers seeded in bulk, a token that may send."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from app.access.tokens import MESSAGES_SEND, create_api_token
from app.store.models import Subscriber, Subscription
from app.store.send_models import RecipientProfile

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
    """Subscribers with a subscription in `program`, written straight to the tables the sending
    rules read (the subscriptions cache and profiles), for tests of thousands of numbers.
    Consent itself is tested through the webhook elsewhere. Returns `{phone: subscriber id}`."""
    phones = list(phones)
    with db.transaction() as session:
        session.execute(
            insert(Subscriber),
            [{"phone": p, "created_at": SEEDED_AT, "chain_seq": 0} for p in phones],
        )
        ids = dict(
            session.execute(
                select(Subscriber.phone, Subscriber.id).where(Subscriber.phone.in_(phones))
            ).all()
        )
        session.execute(
            insert(Subscription),
            [
                {
                    "subscriber_id": ids[p],
                    "program_id": program,
                    "status": status,
                    "since": SEEDED_AT,
                    "confirmed_at": SEEDED_AT if status == "active" else None,
                }
                for p in phones
            ],
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


def send_token(db, scopes=(MESSAGES_SEND,)) -> str:
    with db.transaction() as session:
        _, plain = create_api_token(session, "sender", scopes)
    return plain


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
