"""Ledger hashing (app.core.ledger_hashing): pure functions, no database."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.core import ledger_hashing as lh

FIELDS = {
    "subscriber_id": 7,
    "seq": 3,
    "prev_hash": "a" * 64,
    "witness_id": 41,
    "witness_hash": "b" * 64,
    "kind": "inbound_text",
    "occurred_at": datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC),
    "message_sid": "SM" + "1" * 32,
    "intent": "opt_out",
    "changes": [{"program": "demo", "before": "active", "after": "opted_out"}],
    "phone_commitment": "c" * 64,
    "body_commitment": "d" * 64,
}


def test_hash_is_stable_and_covers_every_hashed_field():
    base = lh.event_hash(FIELDS)
    assert base == lh.event_hash(dict(FIELDS))
    for name in lh.HASHED_FIELDS:
        changed = dict(FIELDS)
        changed[name] = "something else"
        assert lh.event_hash(changed) != base, name


def test_personal_fields_are_not_hashed_directly():
    with_body = dict(FIELDS, body="STOP", personal_salt="00" * 16)
    assert lh.event_hash(with_body) == lh.event_hash(FIELDS)


def test_time_zone_of_the_timestamp_does_not_change_the_hash():
    other_zone = FIELDS["occurred_at"].astimezone(timezone(timedelta(hours=-8)))
    assert lh.event_hash(dict(FIELDS, occurred_at=other_zone)) == lh.event_hash(FIELDS)


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError):
        lh.event_hash(dict(FIELDS, occurred_at=datetime(2026, 1, 1)))


def test_commitments_depend_on_salt_value_and_field():
    salt = lh.new_salt()
    assert lh.phone_commitment(salt, "+14155550100") == lh.phone_commitment(salt, "+14155550100")
    assert lh.phone_commitment(salt, "+14155550100") != lh.phone_commitment(salt, "+14155550101")
    assert lh.phone_commitment(salt, "+14155550100") != lh.phone_commitment(
        lh.new_salt(), "+14155550100"
    )
    assert lh.body_commitment(salt, b"x") != lh.commitment("phone", salt, b"x")


def test_hashes_equal():
    assert lh.hashes_equal("ab", "ab")
    assert not lh.hashes_equal("ab", "ac")
    assert not lh.hashes_equal(None, "ab")
    assert lh.hashes_equal(None, None)
