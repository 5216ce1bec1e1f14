"""Fuzzing POST /twilio/sms and /twilio/status with random and adversarial form data.

Hypothesis drives the Flask test client with bodies built from Twilio's real
fields plus hostile mutations: fields dropped, repeated or added, huge values,
invalid UTF-8, NUL bytes, values of the wrong type (NumSegments=abc,
ErrorCode=xyz, MessageStatus=<garbage>), senders that are not phone numbers,
an empty To, raw unencoded bytes, odd content types and multipart bodies. Most
requests are correctly signed (over the fields exactly as the handler reads
them), so the handler's logic is reached; the rest are unsigned or wrongly signed.

After every request: never a 500, and never a half-written record. A request
that is refused writes nothing; an accepted new text exists completely (its
ledger event, the sender's chain head, its subscriptions, its outbox rows and
their stored texts); a duplicate writes nothing; a status callback writes its
receipt. At the end `flask ledger verify` must pass. Runs on every backend.
See docs/reliability.md, "Hostile input".
"""

from __future__ import annotations

import uuid
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.core.ledger_hashing import text_sha256
from app.store.models import (
    ConsentEvent,
    DeliveryReceipt,
    LedgerText,
    OutboundMessage,
    Subscriber,
    Subscription,
)
from app.web.webhooks import parse_form
from tests.twilio_helpers import (
    PUBLIC_BASE_URL,
    SHORT_CODE,
    inbound_params,
    new_message_sid,
    send_text,
    sign,
    status_params,
)

pytestmark = pytest.mark.slow

SMS_EXAMPLES = 200
STATUS_EXAMPLES = 150
# The database persists across one test's examples (each check compares before and after).
FUZZ_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
TABLES = (ConsentEvent, OutboundMessage, Subscriber, Subscription, DeliveryReceipt, LedgerText)

HOSTILE_VALUES = [
    b"",
    b" ",
    b"\x00",
    b"STOP\x00",
    b"\xff\xfe\xfd",
    b"\xc3\x28",  # an invalid two-byte UTF-8 sequence
    b"\xed\xa0\x80",  # an encoded lone surrogate
    b"abc",
    b"xyz",
    b"-1",
    b"1e9",
    b"99999999999999999999999",
    "²³".encode(),  # digits to str.isdigit(), not to int()
    "١٢٣".encode(),  # Arabic-Indic digits
    b"<garbage>",
    b"delivered",
    b"DELIVERED",
    b"read",
    b"undelivered",
    b"21610",
    b"30003",
    b"not a phone",
    b"+1 415 555 0100",
    b"+14155550100",
    b"14155550100",
    b"+999999999999999999",
    b"12345",
    b"ACME",
    b"whatsapp:+14155550100",
    "\u202e+14155550100".encode(),  # right-to-left override
    "ＳＴＯＰ".encode(),
    b"<script>alert(1)</script>",
    b"'; DROP TABLE consent_events; --",
    b"%",
    b"%zz",
    b"&",
    b"=",
    b"+",
    b"STOP",
    b"JOIN",
    b"YES",
    b"HELP",
    b"SM" + b"0" * 32,
    b"SM" + b"x" * 63,
    b"SM" + b"x" * 64,
]

values = st.one_of(
    st.sampled_from(HOSTILE_VALUES),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.sampled_from([2_000, 20_000, 70_000]).map(lambda n: b"9" * n),  # huge
)
# Values of the wrong type for typed fields (numbers, statuses, addresses), drawn directly
# into the form so that most examples carry one.
TYPED_GARBAGE = [
    "",
    "abc",
    "xyz",
    "<garbage>",
    "-1",
    "1.5",
    "1e9",
    "0x1F",
    "99999999999999999999999",
    "9" * 5000,
    "²³",
    "١٢٣",
    "DELIVERED",
    "délivré",
    "not a phone",
    "+",
    "+0",
    "whatsapp:+14155550100",
    "\u202e+14155550100",
]
typed_garbage = st.one_of(st.sampled_from(TYPED_GARBAGE), st.text(max_size=30))
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/x-www-form-urlencoded; charset=latin-1",
    "text/plain",
    "application/json",
    "application/xml",
    None,
]


def field_names(known: list[str]):
    return st.one_of(st.sampled_from(known), st.text(max_size=12), st.binary(max_size=12))


def mutations(known: list[str]):
    """Edits to a valid form: drop a field, repeat one, replace its value, add a stranger."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("drop"), st.sampled_from(known), st.just(b"")),
            st.tuples(st.just("repeat"), st.sampled_from(known), values),
            st.tuples(st.just("set"), st.sampled_from(known), values),
            st.tuples(st.just("add"), field_names(known), values),
        ),
        max_size=6,
    )


def apply_mutations(pairs: list[tuple[bytes, bytes]], edits) -> list[tuple[bytes, bytes]]:
    for action, name, value in edits:
        key = name if isinstance(name, bytes) else name.encode()
        if action == "drop":
            pairs = [pair for pair in pairs if pair[0] != key]
        elif action == "repeat":
            pairs.append((key, value))
        elif action == "set":
            pairs = [(k, value if k == key else v) for k, v in pairs]
        else:
            pairs.insert(len(pairs) // 2, (key, value))
    return pairs


def encode(pairs: list[tuple[bytes, bytes]], percent_encode: bool) -> bytes:
    """An urlencoded body; without percent-encoding the raw bytes go on the wire as they are."""
    if percent_encode:
        return b"&".join(
            quote_from_bytes(k, safe="").encode() + b"=" + quote_from_bytes(v, safe="").encode()
            for k, v in pairs
        )
    return b"&".join(k + b"=" + v for k, v in pairs)


def multipart(pairs: list[tuple[bytes, bytes]]) -> tuple[bytes, str]:
    boundary = "fuzz" + uuid.uuid4().hex
    parts = [
        b"--"
        + boundary.encode()
        + b'\r\nContent-Disposition: form-data; name="'
        + k.replace(b'"', b"")
        + b'"\r\n\r\n'
        + v
        + b"\r\n"
        for k, v in pairs
    ]
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n", (
        f"multipart/form-data; boundary={boundary}"
    )


@st.composite
def webhook_requests(draw, path: str, base: dict[str, str], *, mutate: bool = True):
    """(body, content type, headers, signed) for one hostile request to `path`.

    With `mutate` false the fields stay as Twilio sends them (only the encoding,
    content type and signature vary), so the accepted path is reached too: most
    mutations now break a field's documented shape (app/web/twilio_fields.py).
    """
    pairs = [(k.encode(), v.encode()) for k, v in base.items()]
    known = list(base)
    if mutate:
        pairs = apply_mutations(pairs, draw(mutations(known)))
    if draw(st.integers(0, 9)) == 0:
        body, content_type = multipart(pairs)
    else:
        body = encode(pairs, percent_encode=draw(st.integers(0, 4)) > 0)
        content_type = draw(st.sampled_from(CONTENT_TYPES))
    signing = draw(st.sampled_from(["valid"] * 7 + ["absent", "wrong", "other-token"]))
    headers = {}
    if signing != "absent":
        # Signed over the fields exactly as the handler decodes them, as Twilio would.
        fields = parse_form(body).text
        url = PUBLIC_BASE_URL + path
        if signing == "wrong":
            url += "?tampered=1"
        token = "someone-elses-token" if signing == "other-token" else None
        headers["X-Twilio-Signature"] = sign(url, fields, **({"token": token} if token else {}))
    return body, content_type, headers, signing == "valid"


def counts(db) -> dict[str, int]:
    with db.transaction(write=False) as session:
        return {
            model.__tablename__: session.execute(
                select(func.count()).select_from(model)
            ).scalar_one()
            for model in TABLES
        }


def post(client, path, body, content_type, headers):
    kwargs = {"data": body, "headers": headers}
    if content_type:
        kwargs["content_type"] = content_type
    return client.post(path, **kwargs)


def assert_text_recorded_completely(db, message_sid: str) -> dict[str, int]:
    """The text's event, chain head, subscriptions, outbox rows and stored texts all exist."""
    with db.transaction(write=False) as session:
        event = session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == message_sid)
        ).scalar_one()
        subscriber = session.get(Subscriber, event.subscriber_id)
        assert (subscriber.chain_seq, subscriber.chain_head_hash) == (event.seq, event.event_hash)
        outbound = (
            session.execute(select(OutboundMessage).where(OutboundMessage.event_id == event.id))
            .scalars()
            .all()
        )
        if event.reply_sha256 is None:
            assert outbound == []
        else:
            assert outbound and text_sha256(outbound[0].body) == event.reply_sha256
        for sha in filter(None, (event.reply_sha256, event.disclosure_sha256)):
            assert session.get(LedgerText, sha) is not None
        for change in event.changes:
            row = session.execute(
                select(Subscription).where(
                    Subscription.subscriber_id == event.subscriber_id,
                    Subscription.program_id == change["program"],
                )
            ).scalar_one()
            assert (row.status, row.last_event_id) == (change["after"], event.id)
        if event.body_raw is not None:
            assert "\x00" not in event.body
        return {"outbound": len(outbound), "changes": len(event.changes)}


def assert_ledger_verifies(app):
    result = app.test_cli_runner().invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


def test_fuzzed_inbound_texts_never_fail_or_half_write(app, client, db):
    seen_sids: list[str] = []
    tally = {"200": 0, "400": 0, "403": 0, "413": 0, "recorded": 0, "duplicates": 0}

    @settings(FUZZ_SETTINGS, max_examples=SMS_EXAMPLES)
    @given(data=st.data())
    def one_request(data):
        # Draw the same shapes whatever was seen before, so examples replay faithfully.
        reuse = data.draw(st.integers(0, 7)) == 0
        pick = data.draw(st.integers(0, 10**6))
        sid = seen_sids[pick % len(seen_sids)] if reuse and seen_sids else new_message_sid()
        phone = data.draw(st.sampled_from(["+14155550100", "+14155550101", "+447700900123"]))
        body_text = data.draw(st.sampled_from(["JOIN", "YES", "STOP", "HELP", "START", "hi"]))
        base = inbound_params(phone, body_text, to=SHORT_CODE, message_sid=sid)
        hostile = data.draw(st.integers(0, 2)) > 0  # a third stay as Twilio sends them
        for name in ("From", "To", "NumSegments", "NumMedia", "AccountSid"):
            if hostile and data.draw(st.integers(0, 5)) == 0:
                base[name] = data.draw(typed_garbage)
        body, content_type, headers, signed = data.draw(
            webhook_requests("/twilio/sms", base, mutate=hostile)
        )
        before = counts(db)
        response = post(client, "/twilio/sms", body, content_type, headers)
        after = counts(db)
        status = response.status_code
        assert status in ((200, 400, 413) if signed else (403, 413)), status
        tally[str(status)] += 1
        handled_sid = parse_form(body).first("MessageSid")
        if status != 200:
            assert after == before
            return
        if handled_sid in seen_sids:
            assert after == before
            tally["duplicates"] += 1
            return
        seen_sids.append(handled_sid)
        tally["recorded"] += 1
        written = assert_text_recorded_completely(db, handled_sid)
        assert after["consent_events"] == before["consent_events"] + 1
        assert after["outbound_messages"] == before["outbound_messages"] + written["outbound"]
        assert after["delivery_receipts"] == before["delivery_receipts"]

    one_request()
    assert_ledger_verifies(app)
    print(f"\n/twilio/sms fuzz: {SMS_EXAMPLES} examples, {tally}")
    assert tally["200"] > 0 and tally["400"] > 0 and tally["403"] > 0


def test_fuzzed_status_callbacks_never_fail_or_half_write(app, client, db):
    sids = []
    for phone in ("+14155550100", "+14155550101"):
        send_text(client, phone, "JOIN")
        send_text(client, phone, "YES")
    with db.transaction() as session:
        for message in session.execute(select(OutboundMessage)).scalars():
            message.status = "sent"
            message.twilio_sid = "SM" + uuid.uuid4().hex
            sids.append(message.twilio_sid)
    tally = {"200": 0, "400": 0, "403": 0, "413": 0, "carrier_opt_outs": 0}

    @settings(FUZZ_SETTINGS, max_examples=STATUS_EXAMPLES)
    @given(data=st.data())
    def one_callback(data):
        sid = data.draw(st.sampled_from([*sids, "SM" + uuid.uuid4().hex]))
        status_value = data.draw(
            st.sampled_from(["queued", "sent", "delivered", "undelivered", "failed", "read"])
        )
        error_code = data.draw(
            st.one_of(
                st.sampled_from([None, "30003", "21610", "30007"]),
                st.one_of(st.sampled_from(TYPED_GARBAGE), st.text(max_size=12)),
            )
        )
        base = status_params(sid, status_value, error_code)
        hostile = data.draw(st.integers(0, 2)) > 0  # a third stay as Twilio sends them
        if hostile and data.draw(st.integers(0, 3)) == 0:
            base["MessageStatus"] = data.draw(typed_garbage)
        body, content_type, headers, signed = data.draw(
            webhook_requests("/twilio/status", base, mutate=hostile)
        )
        before = counts(db)
        response = post(client, "/twilio/status", body, content_type, headers)
        after = counts(db)
        status = response.status_code
        assert status in ((200, 400, 413) if signed else (403, 413)), status
        tally[str(status)] += 1
        if status != 200:
            assert after == before
            return
        assert after["delivery_receipts"] == before["delivery_receipts"] + 1
        new_events = after["consent_events"] - before["consent_events"]
        assert new_events in (0, 1)  # a carrier opt-out (21610) for a known message, at most
        tally["carrier_opt_outs"] += new_events
        assert after["outbound_messages"] == before["outbound_messages"]
        assert after["subscribers"] == before["subscribers"]

    one_callback()
    assert_ledger_verifies(app)
    print(f"\n/twilio/status fuzz: {STATUS_EXAMPLES} examples, {tally}")
    assert tally["200"] > 0 and tally["400"] > 0 and tally["403"] > 0
