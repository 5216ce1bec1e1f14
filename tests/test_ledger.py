"""The consent ledger in the database: append, verify, tamper evidence, append-only triggers."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.ledger.chain import record_checkpoint, verify_ledger, verify_subscriber
from app.store.models import ConsentEvent, Subscriber
from tests.ledger_tampering import tamper
from tests.twilio_helpers import send_text

PHONES = ["+14155550100", "+14155550101", "+14155550102"]


@pytest.fixture
def ledger(client, db):
    """Three numbers, a few events each, interleaved."""
    for body in ["JOIN", "YES", "HELP"]:
        for phone in PHONES:
            response, _ = send_text(client, phone, body)
            assert response.status_code == 200
    return db


def verify(db):
    with db.transaction(write=False) as session:
        return verify_ledger(session)


def event_ids(db, phone) -> list[int]:
    with db.transaction(write=False) as session:
        return list(
            session.execute(
                text(
                    "SELECT e.id FROM consent_events e JOIN subscribers s "
                    "ON s.id = e.subscriber_id WHERE s.phone = :p ORDER BY e.id"
                ),
                {"p": phone},
            ).scalars()
        )


def test_untouched_ledger_verifies(ledger):
    result = verify(ledger)
    assert result.ok, result.message
    assert (result.events, result.subscribers) == (9, 3)


def test_edited_intent_is_detected(ledger):
    target = event_ids(ledger, PHONES[1])[1]
    tamper(ledger, "UPDATE consent_events SET intent = 'other' WHERE id = :id", id=target)
    result = verify(ledger)
    assert not result.ok and result.first_bad_event_id == target
    assert "edited" in result.message


def test_edited_body_is_detected(ledger):
    target = event_ids(ledger, PHONES[0])[0]
    tamper(ledger, "UPDATE consent_events SET body = 'STOP' WHERE id = :id", id=target)
    result = verify(ledger)
    assert not result.ok and result.first_bad_event_id == target
    assert "body" in result.message


def test_changed_phone_number_is_detected(ledger):
    tamper(ledger, "UPDATE subscribers SET phone = '+14155550199' WHERE phone = :p", p=PHONES[2])
    result = verify(ledger)
    assert not result.ok and result.first_bad_event_id == event_ids(ledger, "+14155550199")[0]


def test_deleted_middle_event_is_detected(ledger):
    ids = event_ids(ledger, PHONES[0])
    tamper(ledger, "DELETE FROM outbound_messages WHERE event_id = :id", id=ids[1])
    tamper(ledger, "DELETE FROM consent_events WHERE id = :id", id=ids[1])
    result = verify(ledger)
    assert not result.ok
    # The first event after it in ledger order names it as its witness, and fails first.
    assert result.first_bad_event_id == ids[1] + 1
    assert f"({ids[1]})" in result.message and "deleted" in result.message


def test_reordered_events_are_detected(ledger):
    """Swap the contents of two events of one number (ids stay): the order no longer matches."""
    first, second = event_ids(ledger, PHONES[1])[:2]
    columns = [c.name for c in ConsentEvent.__table__.columns if c.name != "id"]
    assignments = ", ".join(f"{c} = other.{c}" for c in columns)
    tamper(
        ledger,
        "CREATE TABLE swap AS SELECT * FROM consent_events WHERE id IN (:a, :b)",
        a=first,
        b=second,
    )
    tamper(
        ledger,
        "UPDATE consent_events SET message_sid = NULL, seq = -seq WHERE id IN (:a, :b)",
        a=first,
        b=second,
    )
    tamper(
        ledger,
        f"UPDATE consent_events SET {assignments} FROM swap AS other "
        "WHERE consent_events.id = :a AND other.id = :b",
        a=first,
        b=second,
    )
    tamper(
        ledger,
        f"UPDATE consent_events SET {assignments} FROM swap AS other "
        "WHERE consent_events.id = :b AND other.id = :a",
        a=first,
        b=second,
    )
    tamper(ledger, "DROP TABLE swap")
    result = verify(ledger)
    assert not result.ok
    assert result.first_bad_event_id == first
    assert "order" in result.message


def test_removing_every_event_of_one_number_is_detected(ledger):
    ids = event_ids(ledger, PHONES[1])
    for event_id in ids:
        tamper(ledger, "DELETE FROM outbound_messages WHERE event_id = :id", id=event_id)
        tamper(ledger, "DELETE FROM consent_events WHERE id = :id", id=event_id)
    result = verify(ledger)
    assert not result.ok
    assert "deleted" in result.message


def test_removing_a_number_entirely_including_its_row_is_detected(ledger):
    ids = event_ids(ledger, PHONES[1])
    for event_id in ids:
        tamper(ledger, "DELETE FROM outbound_messages WHERE event_id = :id", id=event_id)
        tamper(ledger, "DELETE FROM consent_events WHERE id = :id", id=event_id)
    for table in ("subscriptions", "recipient_profiles"):
        tamper(
            ledger,
            f"DELETE FROM {table} WHERE subscriber_id IN "
            "(SELECT id FROM subscribers WHERE phone = :p)",
            p=PHONES[1],
        )
    tamper(ledger, "DELETE FROM subscribers WHERE phone = :p", p=PHONES[1])
    result = verify(ledger)
    assert not result.ok
    # Later events of other numbers witnessed the removed ones.
    assert "witnessed" in result.message


def test_removing_the_tail_is_detected_after_a_checkpoint(ledger):
    with ledger.transaction() as session:
        record_checkpoint(session, verify_ledger(session))
    last = event_ids(ledger, PHONES[2])[-1]
    tamper(ledger, "DELETE FROM outbound_messages WHERE event_id = :id", id=last)
    tamper(ledger, "DELETE FROM consent_events WHERE id = :id", id=last)
    tamper(
        ledger,
        "UPDATE subscribers SET chain_seq = chain_seq - 1, chain_head_hash = "
        "(SELECT event_hash FROM consent_events e WHERE e.subscriber_id = subscribers.id "
        "ORDER BY e.seq DESC LIMIT 1) WHERE phone = :p",
        p=PHONES[2],
    )
    result = verify(ledger)
    assert not result.ok
    assert result.first_bad_event_id == last


def test_removing_personal_data_keeps_the_ledger_verifiable(ledger):
    with ledger.transaction() as session:
        session.execute(text("UPDATE consent_events SET body = NULL, body_raw = NULL"))
    result = verify(ledger)
    assert result.ok, result.message
    assert result.redacted == 9


def test_verify_subscriber_checks_one_chain(ledger):
    target = event_ids(ledger, PHONES[0])[2]
    tamper(ledger, "UPDATE consent_events SET status_after = 'opted_out' WHERE id = :id", id=target)
    with ledger.transaction(write=False) as session:
        subscribers = {s.phone: s for s in session.execute(select(Subscriber)).scalars()}
        assert verify_subscriber(session, subscribers[PHONES[1]]).ok
        bad = verify_subscriber(session, subscribers[PHONES[0]])
    assert not bad.ok and bad.first_bad_event_id == target


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_events SET intent = 'other'",
        "UPDATE consent_events SET body = 'changed'",
        "UPDATE consent_events SET personal_salt = upper(personal_salt)",
        "DELETE FROM consent_events",
        "TRUNCATE consent_events CASCADE",
        "UPDATE ledger_texts SET body = 'changed'",
        "DELETE FROM ledger_texts",
    ],
)
def test_the_database_refuses_changes_to_ledger_rows(ledger, statement):
    if ledger.is_sqlite and statement.startswith("TRUNCATE"):
        statement = "DELETE FROM consent_events"  # SQLite's TRUNCATE is an unqualified DELETE
    with pytest.raises(DBAPIError, match="append-only"):
        with ledger.engine.begin() as connection:
            connection.execute(text(statement))
    assert verify(ledger).ok


def test_the_database_allows_only_nulling_personal_columns(ledger):
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE consent_events SET body = NULL, personal_salt = NULL"))
    assert verify(ledger).ok
