"""The grammar of a request to stop (app.core.opt_out_grammar), pattern by pattern."""

from __future__ import annotations

import pytest

from app.core.keywords import OPT_OUT, OTHER, RULE_MAX, classify, tokens
from app.core.opt_out_grammar import read_opt_out


def read(text: str):
    return read_opt_out(tokens(text))


@pytest.mark.parametrize(
    ("text", "pattern", "language"),
    [
        ("desuscríbanme", "unsubscribe", "es"),
        ("résiliez mon abonnement", "cancel_subscription", "fr"),
        ("se equivocaron de número", "wrong_number", "es"),
        ("ошиблись номером", "wrong_number", "ru"),
        ("ce n'est pas mon numéro", "not_my_number", "fr"),
        ("това не е моят номер", "not_my_number", "bg"),
        ("déjenme en paz", "leave_alone", "es"),
        ("оставете ме на мира", "leave_alone", "bg"),
        ("отстаньте", "leave_alone", "ru"),
        ("bórrenme de su lista", "remove_me", "es"),
        ("изтрийте номера ми", "remove_me", "bg"),
        ("denme de baja", "de_baja", "es"),
        ("quiero salir de la lista", "leave_list", "es"),
        ("dejen de enviarme mensajes", "stop_sending", "es"),
        ("спрете да ми пишете", "stop_sending", "bg"),
        ("ne m'écrivez plus", "dont_send", "fr"),
        ("m'envoyez plus de sms", "dont_send", "fr"),
        ("не пишите мне", "dont_send", "ru"),
        ("ya no quiero recibir mensajes", "no_want", "es"),
        ("ваши сообщения мне не нужны", "no_want", "ru"),
        ("basta de mensajes", "no_more", "es"),
        ("никаких больше смс", "no_more", "ru"),
        ("I do not wish to receive any more messages", "no_want", "en"),
    ],
)
def test_each_pattern_reads_its_shape(text, pattern, language):
    match = read(text)
    assert match is not None and match.opt_out, text
    assert (match.pattern, match.language) == (pattern, language)
    assert match.rule.startswith(f"opt_out.{pattern}.{language}:")


@pytest.mark.parametrize(
    "text",
    [
        "no me enviaron el código",  # past tense: a complaint
        "вы не писали мне вчера?",  # past tense
        "elle ne m'envoie plus de photos",  # someone else is the subject
        "Он больше не пишет мне",
        "Той вече не ми пише",  # third person present
        "Vous m'avez retiré de la liste ?",  # past auxiliary
        "dejé de recibir los mensajes",  # the subscriber stopped receiving: a report
        "Sácame de dudas, a qué hora abren",  # an idiom: not a list, not a number
        "ya no quiero",  # too little to act on
        "no me llamen",  # calls, not texts
    ],
)
def test_half_a_request_or_a_report_is_only_flagged(text):
    match = read(text)
    assert match is not None and not match.opt_out, text
    result = classify(text)
    assert (result.intent, result.possible_opt_out) == (OTHER, True)
    assert result.rule == "other.possible_opt_out"


@pytest.mark.parametrize(
    "text",
    [
        "no quiero perder tus mensajes",  # only gap words may stand between the parts
        "envoyez-moi plus d'infos",  # "plus" after the verb asks for more
        "Je veux recevoir plus d'offres",
        "Je ne reçois pas les messages",  # a bare "no messages" only as the whole text
        "I don't want to miss the next sale, send me the date",
        "el autobús no para aquí",  # "para" is "for" far more often than "stop!"
    ],
)
def test_words_that_do_not_make_a_request_are_not_opt_outs(text):
    assert classify(text).intent != OPT_OUT


def test_the_rule_names_lexicon_words_only_never_a_name_or_number_from_the_text():
    result = classify("Juan Pérez 555-0100 dice: no quiero recibir más mensajes de Acme")
    assert result.intent == OPT_OUT
    assert result.rule == "opt_out.no_want.es:no quiero recibir mas mensajes"
    assert "juan" not in result.rule and "555" not in result.rule


def test_a_grammar_rule_is_bounded_for_the_ledger():
    for text in (
        "не хочу больше получать никаких ваших рекламных уведомлений",
        "не желаем повече да получаваме никакви рекламни съобщения",
        "Je ne souhaite absolument plus recevoir aucune de vos notifications",
    ):
        rule = classify(text).rule
        assert rule.startswith("opt_out.") and len(rule) <= RULE_MAX


def test_a_request_deep_in_a_long_text_is_found():
    text = "Hola, gracias por todo. " * 300 + "Por favor no me manden más mensajes."
    assert classify(text).intent == OPT_OUT


def test_older_rules_keep_their_names():
    """Texts the keyword tables read before the grammar existed keep their rule."""
    assert classify("STOP").rule == "opt_out.first_word:stop"
    assert classify("no me envíen más mensajes").rule == "opt_out.phrase:no me envien"
    assert classify("remove me from this list").rule == "opt_out.phrase:remove me"
