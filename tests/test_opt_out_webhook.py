"""Requests to stop in words, end to end through the signed webhook, in every language.

A sample of the corpus (tests/data/opt_outs_<language>.toml) is texted by a subscriber
who joined and confirmed: the ledger event must carry the opt-out with the grammar's
rule and language, the subscription must end, and the one reply must be the opt-out
confirmation in the subscriber's language. A look-alike changes nothing and, where the
grammar sees half a request, is flagged for review.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.models import ConsentEvent, OutboundMessage
from tests.test_inbound import status
from tests.twilio_helpers import send_text

CONFIRM = {"en": "YES", "es": "SI", "fr": "OUI", "ru": "ДА", "bg": "ДА"}

REQUESTS = [
    ("en", "I don't want these texts anymore", "opt_out.no_want.en:"),
    ("es", "No quiero recibir más mensajes", "opt_out.no_want.es:"),
    ("es", "Bórrenme de su lista", "opt_out.remove_me.es:"),
    ("fr", "Je ne veux plus recevoir de messages", "opt_out.no_want.fr:"),
    ("fr", "Ne m'écrivez plus", "opt_out.dont_send.fr:"),
    ("ru", "Не хочу получать сообщения", "opt_out.no_want.ru:"),
    ("ru", "Оставьте меня в покое", "opt_out.leave_alone.ru:"),
    ("bg", "Не ми пращайте повече съобщения", "opt_out.dont_send.bg:"),
    ("bg", "Извадете ме от списъка", "opt_out.remove_me.bg:"),
]

LOOK_ALIKES = [
    ("es", "No me enviaron el código", True),
    ("es", "El autobús no para aquí", False),
    ("fr", "Le bus ne s'arrête pas ici", False),
    ("ru", "Вы не писали мне вчера?", True),
    ("bg", "Той вече не ми пише", True),
]


def event(db, sid) -> ConsentEvent:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent).where(ConsentEvent.message_sid == sid)
        ).scalar_one()


def replies(db, event_id) -> list[OutboundMessage]:
    with db.transaction(write=False) as session:
        return list(
            session.execute(
                select(OutboundMessage).where(OutboundMessage.event_id == event_id)
            ).scalars()
        )


def subscribe(client, phone, language):
    for body in ("JOIN", CONFIRM[language]):
        response, _ = send_text(client, phone, body)
        assert response.status_code == 200


@pytest.mark.parametrize(("language", "body", "rule"), REQUESTS)
def test_a_request_in_words_opts_out_with_the_confirmation_in_its_language(
    client, db, app, language, body, rule
):
    phone = "+14155550123"
    subscribe(client, phone, language)
    assert status(db, phone) == "active"

    response, sid = send_text(client, phone, body)
    assert response.status_code == 200
    recorded = event(db, sid)
    assert (recorded.intent, recorded.language) == ("opt_out", language)
    assert recorded.rule.startswith(rule)
    assert (recorded.status_before, recorded.status_after) == ("active", "opted_out")
    assert status(db, phone) == "opted_out"
    texts = app.extensions["programs"].get("demo").texts_for([language])
    assert [(r.kind, r.body) for r in replies(db, recorded.id)] == [
        ("opt_out_confirmation", texts.opt_out_confirmation)
    ]


@pytest.mark.parametrize(("language", "body", "flagged"), LOOK_ALIKES)
def test_a_look_alike_changes_nothing_and_is_flagged_when_half_a_request(
    client, db, language, body, flagged
):
    phone = "+14155550124"
    subscribe(client, phone, language)

    response, sid = send_text(client, phone, body)
    assert response.status_code == 200
    recorded = event(db, sid)
    assert (recorded.intent, recorded.possible_opt_out) == ("other", flagged)
    assert status(db, phone) == "active"
    assert [r.kind for r in replies(db, recorded.id)] == []
