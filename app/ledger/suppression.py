"""The suppression list: numbers erased at their owner's request, kept only as keyed hashes.

After an erasure the number itself is gone, yet it must never be texted again by
mistake (an old export re-imported, another system's stale list). Regulators
advise keeping exactly this: a hash of the number, under a key of ours
(`SUPPRESSION_KEY`) so that the list cannot be reversed by hashing every number.

The one way back is the consumer's own: texting JOIN (then YES) starts a new
subscriber row, created after the suppression, whose history is theirs alone.
Imports, staff and the API can never bring a suppressed number back. The entry
itself is never removed: it is the record that the erasure was honoured.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.ledger.chain import insert_ignoring_conflicts
from app.store.models import Suppression


def phone_hmac(key: bytes, phone: str) -> str:
    """HMAC-SHA256 of an E.164 number: the only trace of it the suppression list keeps."""
    return hmac.new(key, phone.encode("utf-8"), hashlib.sha256).hexdigest()


def history_may_be_texted(subscriber_created_at: datetime, suppressed_at: datetime | None) -> bool:
    """A suppressed number may be texted only within a history begun after its erasure.

    Such a history can only have begun with the consumer texting us (the erased
    row lost its number, so every later row was born from a new inbound text).
    """
    return suppressed_at is None or subscriber_created_at > suppressed_at


def suppressed_at(session: Session, key: bytes, phone: str) -> datetime | None:
    """When `phone` was (last) erased, or None if it never was."""
    return session.execute(
        select(Suppression.suppressed_at).where(Suppression.phone_hmac == phone_hmac(key, phone))
    ).scalar_one_or_none()


def suppressions_for(session: Session, key: bytes, phones: Iterable[str]) -> dict[str, datetime]:
    """`{phone: suppressed_at}` for those of `phones` on the suppression list; one query."""
    by_hmac = {phone_hmac(key, phone): phone for phone in phones}
    if not by_hmac:
        return {}
    rows = session.execute(
        select(Suppression.phone_hmac, Suppression.suppressed_at).where(
            Suppression.phone_hmac.in_(list(by_hmac))
        )
    )
    return {by_hmac[row.phone_hmac]: row.suppressed_at for row in rows}


def suppress(session: Session, key: bytes, phone: str, at: datetime, event_id: int) -> str:
    """Put `phone` on the suppression list (again: a second erasure moves its time on)."""
    digest = phone_hmac(key, phone)
    insert_ignoring_conflicts(
        session,
        Suppression,
        {"phone_hmac": digest, "suppressed_at": at, "event_id": event_id},
        ["phone_hmac"],
    )
    # Inserted or already there: either way it now names this erasure.
    session.execute(
        update(Suppression)
        .where(Suppression.phone_hmac == digest)
        .values(suppressed_at=at, event_id=event_id)
    )
    return digest
