"""Canonical webhook fields (app/web/twilio_fields.py): spliced replays are refused.

Twilio signs the URL followed by every field's name and value, sorted by name,
joined with no separator. A captured request can therefore be re-cut: move
characters across a name/value boundary and the signed string, so the
signature, stays the same while the fields change (issue 12, finding 1). These
tests replay such variants against the webhooks.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from app.store.models import ConsentEvent, OutboundMessage, Subscriber, Subscription
from app.web.twilio_fields import FieldError, inbound_fields, parse_form, status_fields
from tests.twilio_helpers import (
    PUBLIC_BASE_URL,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    inbound_params,
    new_message_sid,
    post_signed,
    send_text,
    sign,
    status_params,
)

PHONE = "+14155550100"
TABLES = (ConsentEvent, OutboundMessage, Subscriber, Subscription)


def counts(db) -> dict[str, int]:
    with db.transaction(write=False) as session:
        return {
            model.__tablename__: session.execute(
                select(func.count()).select_from(model)
            ).scalar_one()
            for model in TABLES
        }


def demo_status(db, phone: str = PHONE) -> str:
    with db.transaction(write=False) as session:
        status = session.execute(
            select(Subscription.status)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.phone == phone, Subscription.program_id == "demo")
        ).scalar_one_or_none()
    return status or "none"


def captured(body: str) -> tuple[dict[str, str], str]:
    """A correctly signed inbound request, as an eavesdropper or a log would have kept it."""
    params = inbound_params(PHONE, body, message_sid=new_message_sid())
    return params, sign(PUBLIC_BASE_URL + "/twilio/sms", params)


def spliced(params: dict[str, str]) -> dict[str, str]:
    """The issue's splice: drop `NumMedia=0`, append `NumMedia0` to the MessageSid.

    Sorted, `MessageSid` is followed by `NumMedia`, so the signed string
    "…MessageSid<sid>NumMedia0NumSegments1…" is unchanged: same signature, new SID.
    """
    variant = {name: value for name, value in params.items() if name != "NumMedia"}
    variant["MessageSid"] = params["MessageSid"] + "NumMedia0"
    return variant


def replay(client, params: dict[str, str], signature: str):
    return client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})


def test_the_spliced_replay_keeps_a_valid_signature():
    """The premise of the attack: the signature does not tell the variant from the original."""
    params, signature = captured("JOIN")
    assert sign(PUBLIC_BASE_URL + "/twilio/sms", spliced(params)) == signature


def test_a_spliced_replay_of_join_and_yes_cannot_resubscribe_after_stop(client, db):
    """Finding 1: old JOIN and YES, re-cut with new SIDs, re-subscribed a number after STOP."""
    join, join_signature = captured("JOIN")
    yes, yes_signature = captured("YES")
    assert replay(client, join, join_signature).status_code == 200
    assert replay(client, yes, yes_signature).status_code == 200
    assert demo_status(db) == "active"
    response, _ = send_text(client, PHONE, "STOP")
    assert response.status_code == 200
    assert demo_status(db) == "opted_out"
    before = counts(db)

    for params, signature in ((join, join_signature), (yes, yes_signature)):
        response = replay(client, spliced(params), signature)
        assert response.status_code in (400, 403), response.status_code

    assert counts(db) == before  # nothing written: no event, no reply, no subscription
    assert demo_status(db) == "opted_out"


# --- re-cutting a signed request at its name/value boundaries -------------------------------

URL = PUBLIC_BASE_URL + "/twilio/sms"
RECORDED = ("message_sid", "account_sid", "from_address", "to_address", "body_raw")


def signed_tokens(params: dict[str, str]) -> list[str]:
    """Names and values in the order Twilio signs them: sorted by name, name then value."""
    return [part for name in sorted(params) for part in (name, params[name])]


def recut(tokens: list[str], boundary: int, position: int) -> list[str]:
    """Move the boundary after `tokens[boundary]` to `position` in the joined string.

    Boundaries it passes on the way collapse onto it (their tokens become empty),
    so whole fields can be swallowed, as in the issue's splice. The joined
    string, and so the signature, is unchanged by construction.
    """
    joined = "".join(tokens)
    ends = [sum(map(len, tokens[: k + 1])) for k in range(len(tokens) - 1)]
    moved = [
        min(end, position) if k < boundary else max(end, position) if k > boundary else position
        for k, end in enumerate(ends)
    ]
    cuts = [0, *moved, len(joined)]
    return [joined[cuts[k] : cuts[k + 1]] for k in range(len(tokens))]


def as_pairs(tokens: list[str]) -> list[tuple[str, str]]:
    """The form fields the tokens make; a field whose name and value both vanished is gone."""
    pairs = [(tokens[k], tokens[k + 1]) for k in range(0, len(tokens), 2)]
    return [(name, value) for name, value in pairs if name or value]


def signature_of(pairs: list[tuple[str, str]]) -> str:
    return RequestValidator(TEST_AUTH_TOKEN).compute_signature(URL, MultiDict(pairs))


def read_as(pairs: list[tuple[str, str]]) -> tuple | None:
    """What the webhook would record from these fields (None when it refuses them)."""
    form = parse_form(urlencode(pairs).encode())
    try:
        fields = inbound_fields(form, TEST_ACCOUNT_SID)
    except FieldError:
        return None
    return tuple(getattr(fields, name) for name in RECORDED)


def boundary_moves(tokens: list[str]):
    """Every move of one boundary to every other position, sweeping the boundaries it passes."""
    joined_length = len("".join(tokens))
    ends = [sum(map(len, tokens[: k + 1])) for k in range(len(tokens) - 1)]
    for boundary, end in enumerate(ends):
        for position in range(joined_length + 1):
            if position != end:
                yield recut(tokens, boundary, position)


def test_the_issues_splice_is_one_boundary_sweep():
    params, signature = captured("JOIN")
    tokens = signed_tokens(params)
    boundary = tokens.index("MessageSid") + 1  # after the SID's value
    swept_to = len("".join(tokens[: tokens.index("NumMedia") + 2]))
    variant = as_pairs(recut(tokens, boundary, swept_to))
    assert dict(variant) == spliced(params)
    assert signature_of(variant) == signature


def test_no_boundary_move_of_a_recorded_text_is_recorded_again(client, db):
    """Every re-cut of a recorded JOIN that moves one boundary anywhere, with the old signature.

    Those that still sort into the signed string keep the signature: each is
    replayed and must answer 400, or 200 only as the original's duplicate (its
    MessageSid; nothing written), and judged alone must read as the original or
    be refused. A sample of the others is replayed too: 403.
    """
    params, signature = captured("JOIN")
    original = read_as(list(params.items()))
    assert replay(client, params, signature).status_code == 200
    before = counts(db)
    answers: dict[str, int] = {}
    variants = list(boundary_moves(signed_tokens(params)))
    signed = [pairs for pairs in map(as_pairs, variants) if signature_of(pairs) == signature]
    unsigned = [pairs for pairs in map(as_pairs, variants[::97]) if pairs not in signed]
    for pairs in signed + unsigned:
        response = client.post(
            "/twilio/sms",
            data=urlencode(pairs),
            content_type="application/x-www-form-urlencoded",
            headers={"X-Twilio-Signature": signature},
        )
        kind = "signed" if pairs in signed else "unsigned"
        answers[f"{kind} {response.status_code}"] = (
            answers.get(f"{kind} {response.status_code}", 0) + 1
        )
        assert response.status_code in ((200, 400) if kind == "signed" else (403,)), pairs
        if response.status_code == 200:
            assert dict(pairs)["MessageSid"] == params["MessageSid"], pairs
        if kind == "signed":
            assert read_as(pairs) in (None, original), pairs
    assert counts(db) == before
    print(f"\nre-cuts moving one boundary: {len(variants)}, still signed {len(signed)}, {answers}")
    assert len(signed) > 100  # the signature really does not tell these variants apart


@st.composite
def signed_requests(draw) -> dict[str, str]:
    """Inbound webhooks as Twilio sends them, over varied numbers, bodies and optional fields."""
    phone = "+1415555" + draw(st.text("0123456789", min_size=4, max_size=4))
    body = draw(
        st.one_of(
            st.sampled_from(["JOIN", "YES", "STOP", "HELP", "START", "", "Stop please"]),
            st.text(max_size=30),
        )
    )
    to = draw(st.sampled_from(["12345", "55555", "+14155550199"]))
    sid = draw(st.sampled_from(["SM", "MM"])) + draw(
        st.text("0123456789abcdef", min_size=32, max_size=32)
    )
    params = inbound_params(phone, body, to=to, message_sid=sid)
    if draw(st.booleans()):
        params["MessagingServiceSid"] = "MG" + draw(
            st.text("0123456789abcdef", min_size=32, max_size=32)
        )
    for optional in ("FromCity", "FromState", "FromZip", "ToCity", "ToState", "ToZip"):
        if draw(st.booleans()):
            params.pop(optional)
    return params


@settings(max_examples=1000, deadline=None)
@given(params=signed_requests(), data=st.data())
def test_no_recut_of_any_signed_request_reads_as_another_text(params, data):
    """One to three boundary moves, anywhere (sweeping whole fields), of random requests.

    Re-cutting keeps the joined string; a variant whose fields still sort into it
    keeps the signature too. Each such variant must be refused, or read exactly
    as the original (the same MessageSid, sender, number, account and body
    bytes): the original's duplicate. The rest fail the signature (403).
    """
    original = read_as(list(params.items()))
    assert original is not None
    tokens = signed_tokens(params)
    length = len("".join(tokens))
    for _ in range(data.draw(st.integers(1, 3))):
        boundary = data.draw(st.integers(0, len(tokens) - 2))
        tokens = recut(tokens, boundary, data.draw(st.integers(0, length)))
    pairs = as_pairs(tokens)
    if signature_of(pairs) != signature_of(list(params.items())):
        event("re-cut breaks the signature")
        return
    verdict = read_as(pairs)
    event("still signed: " + ("refused" if verdict is None else "reads as the original"))
    assert verdict in (None, original)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_recut_replayed_after_stop_writes_anything(client, db, data):
    """Re-cuts of a recorded JOIN, replayed through the webhook after STOP: nothing changes."""
    params = data.draw(signed_requests())
    params["Body"] = "JOIN"
    signature = sign(URL, params)
    if replay(client, params, signature).status_code == 200:
        send_text(client, params["From"], "STOP", to=params["To"])
    before = counts(db)
    tokens = signed_tokens(params)
    length = len("".join(tokens))
    for _ in range(data.draw(st.integers(1, 3))):
        boundary = data.draw(st.integers(0, len(tokens) - 2))
        tokens = recut(tokens, boundary, data.draw(st.integers(0, length)))
    response = client.post(
        "/twilio/sms",
        data=urlencode(as_pairs(tokens)),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code in (200, 400, 403)
    assert counts(db) == before


# --- each field's documented shape ------------------------------------------------------------

SID = "SM" + "a1" * 16


def inbound_form(**changes) -> dict[str, str]:
    """Twilio's inbound fields with `changes` (a value None drops the field)."""
    params = inbound_params(PHONE, "JOIN", message_sid=SID)
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def status_form(**changes) -> dict[str, str]:
    params = status_params(SID, "delivered")
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def refusal(check, params: dict[str, str]) -> int | None:
    """The status a form is refused with (None when accepted)."""
    try:
        check(parse_form(urlencode(params).encode()), TEST_ACCOUNT_SID)
    except FieldError as error:
        return error.status
    return None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        ({"MessageSid": "MM" + "0" * 32, "SmsSid": "MM" + "0" * 32, "SmsMessageSid": None}, None),
        ({"SmsSid": None, "SmsMessageSid": None}, None),  # deprecated copies are optional
        ({"MessageSid": None}, 400),  # the contract: MessageSid is required, whatever else
        ({"MessageSid": SID.upper()}, 400),
        ({"MessageSid": "SM" + "a" * 31}, 400),
        ({"MessageSid": SID + "NumMedia0"}, 400),
        ({"MessageSid": "AC" + "0" * 32}, 400),
        ({"MessageSid": " " + SID}, 400),
        ({"SmsSid": "SM" + "b" * 32}, 400),  # must equal MessageSid
        ({"SmsMessageSid": "SM" + "b" * 32}, 400),
        ({"AccountSid": "AC" + "1" * 32}, 403),  # another account, correctly signed
        ({"AccountSid": None}, 400),
        ({"AccountSid": "ACxyz"}, 400),
        ({"From": None}, 400),
        ({"From": "ACME"}, 400),
        ({"From": "+14155550100FromCitySAN FRANCISCO"}, 400),
        ({"From": "whatsapp:+14155550100"}, 400),
        ({"From": "14155550100"}, None),
        ({"To": "12345ToCity"}, 400),
        ({"To": "+14155550199"}, None),
        ({"Body": None}, 400),
        ({"Body": ""}, None),
        ({"Body": "x" * 1600}, None),
        ({"Body": "x" * 1601}, 400),
        ({"NumMedia": None}, 400),
        ({"NumMedia": "01"}, 400),
        ({"NumMedia": "11"}, 400),
        ({"NumMedia": "3"}, None),
        ({"NumSegments": None}, None),
        ({"NumSegments": "abc"}, 400),
        ({"NumSegments": "1NumSegments"}, 400),
        ({"MessagingServiceSid": "MG" + "c" * 32}, None),
        ({"MessagingServiceSid": "MGxyz"}, 400),
        ({"FromCity": "anything at all <b>", "SomeNewTwilioField": "x"}, None),  # unread
    ],
)
def test_inbound_fields_have_their_documented_shapes(changes, expected):
    assert refusal(inbound_fields, inbound_form(**changes)) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        ({"SmsSid": None, "SmsStatus": None}, None),
        ({"MessageSid": None}, 400),
        ({"SmsSid": "SM" + "b" * 32}, 400),
        ({"MessageSid": "SMunknown", "SmsSid": "SMunknown"}, 400),
        ({"MessageStatus": None}, 400),
        ({"MessageStatus": "DELIVERED", "SmsStatus": "DELIVERED"}, 400),
        ({"MessageStatus": "teleported", "SmsStatus": "teleported"}, 400),
        ({"SmsStatus": "failed"}, 400),  # must equal MessageStatus
        ({"MessageStatus": "read", "SmsStatus": "read"}, None),
        ({"ErrorCode": "30003"}, None),
        ({"ErrorCode": "3000"}, 400),
        ({"ErrorCode": "030003"}, 400),
        ({"AccountSid": "AC" + "1" * 32}, 403),
    ],
)
def test_status_fields_have_their_documented_shapes(changes, expected):
    assert refusal(status_fields, status_form(**changes)) == expected


@pytest.mark.parametrize("path", ["/twilio/sms", "/twilio/status"])
def test_another_accounts_signed_request_is_403_and_writes_nothing(client, db, path):
    """Signed with our token but naming another account: not a request for this service."""
    params = (
        inbound_form(AccountSid="AC" + "1" * 32)
        if path.endswith("sms")
        else status_form(AccountSid="AC" + "1" * 32)
    )
    before = counts(db)
    assert post_signed(client, path, params).status_code == 403
    assert counts(db) == before
