"""The suppression list: keyed hashes of erased numbers, and when they may be texted again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.ledger.suppression import history_may_be_texted, phone_hmac, suppress, suppressions_for
from app.store.db import utcnow
from app.store.models import Suppression

PHONE = "+14155550100"


def test_the_hash_is_keyed_and_keeps_no_trace_of_the_number():
    digest = phone_hmac(b"key one", PHONE)
    assert digest == phone_hmac(b"key one", PHONE) != phone_hmac(b"key two", PHONE)
    assert len(digest) == 64 and "4155550100" not in digest


def test_only_a_history_begun_after_the_erasure_may_be_texted():
    erased = datetime(2026, 1, 1, tzinfo=UTC)
    assert history_may_be_texted(erased - timedelta(days=9), None)
    assert not history_may_be_texted(erased - timedelta(days=9), erased)
    assert history_may_be_texted(erased + timedelta(seconds=1), erased)


def test_suppress_twice_keeps_one_entry_with_the_latest_time(db):
    first, second = utcnow() - timedelta(days=1), utcnow()
    with db.transaction() as session:
        suppress(session, b"k", PHONE, first, None)
    with db.transaction() as session:
        suppress(session, b"k", PHONE, second, None)
    with db.transaction(write=False) as session:
        [row] = session.execute(select(Suppression)).scalars().all()
        assert row.suppressed_at == second
        found = suppressions_for(session, b"k", [PHONE, "+14155550111"])
    assert found == {PHONE: second}
