"""The keyword tables: every built-in keyword and plain-language revocation, by language.

Pure data with its indexes. Each entry is written as a person would type it and is
normalised on load, so the tables read like the texts they match. `keywords.classify`
applies them in order; the deeper grammar of a request to stop (negation + "want" +
"messages", "remove me from your list", …) lives in `opt_out_grammar`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from app.core.normalization import normalize

LANGUAGES = ("en", "es", "fr", "ru", "bg")

# ----------------------------------------------------------------------------------------------
# Word sets. Each entry is written as a person would type it; it is normalised on load.
# "common" opt-out words are everyday words too (stop, end, cancel): they opt out as the first
# word or among keywords only, and are flagged for review when found deeper in a sentence.
# "strong" opt-out words mean nothing else: they opt out wherever they appear.

_OPT_OUT_COMMON: dict[str, tuple[str, ...]] = {
    "en": ("STOP", "END", "QUIT", "CANCEL", "STOP ALL", "STOPALL", "STOPP", "CANCEL ALL"),
    "es": (
        "STOP",
        "ALTO",
        "PARAR",
        "PARE",
        "DETENER",
        "CANCELAR",
        "FIN",
        "BAJA",
        "NO MAS",
        "ANULAR",
    ),
    "fr": ("ARRET", "ARRETER", "ARRETEZ", "STOP", "FIN", "ANNULER"),
    "ru": ("STOP", "СТОП", "ОТМЕНА", "ОТМЕНИТЬ", "ХВАТИТ", "ПРЕКРАТИТЬ", "ОСТАНОВИТЬ"),
    "bg": ("STOP", "СТОП", "СПРИ", "СПРЕТЕ", "СТИГА", "ОТКАЗ", "ПРЕКРАТИ", "ПРЕКРАТЕТЕ"),
}

_OPT_OUT_STRONG: dict[str, tuple[str, ...]] = {
    "en": (
        "UNSUBSCRIBE",
        "UNSUB",
        "UNSUSCRIBE",
        "UNSUBCRIBE",
        "UNSUBSCRIBED",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "OPT-OUT",
        "OPTED OUT",
    ),
    "es": (
        "DARSE DE BAJA",
        "DARME DE BAJA",
        "DESUSCRIBIR",
        "DESUSCRIBIRME",
        "DESUSCRIBIRSE",
        "DESINSCRIBIR",
        "CANCELAR SUSCRIPCION",
        "REVOCAR",
    ),
    "fr": (
        "DESABONNER",
        "DESABONNEMENT",
        "DESINSCRIRE",
        "DESINSCRIPTION",
        "DESINSCRIVEZ MOI",
        "DESABONNEZ MOI",
        "REVOQUER",
    ),
    "ru": ("ОТПИСАТЬСЯ", "ОТПИСКА", "ОТПИШИТЕ", "ОТПИШИ", "ОТПИСАТЬ"),
    "bg": ("ОТПИШИ", "ОТПИШЕТЕ", "ОТПИСВАНЕ", "ОТПИСВАМ"),
}

# Plain-language revocations: opt-out wherever they appear in a text.
_OPT_OUT_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "stop texting",
        "stop messaging",
        "stop sending",
        "stop contacting",
        "stop the texts",
        "stop the messages",
        "stop all texts",
        "stop all messages",
        "stop these texts",
        "stop these messages",
        "remove me",
        "remove my number",
        "take me off",
        "take my number off",
        "delete my number",
        "unsubscribe me",
        "opt me out",
        "don't text me",
        "dont text me",
        "do not text me",
        "don't message me",
        "dont message me",
        "do not message me",
        "don't contact me",
        "dont contact me",
        "do not contact me",
        "don't send me",
        "dont send me",
        "do not send me",
        "never text me",
        "no more texts",
        "no more messages",
        "no more text messages",
        "wrong number",
        "leave me alone",
        "i want out",
        "lose my number",
    ),
    "es": (
        "no me envien",
        "no me manden",
        "no me escriban",
        "no me contacten",
        "dejen de enviar",
        "dejen de escribir",
        "dejen de mandar",
        "deja de enviar",
        "quitenme",
        "eliminen mi numero",
        "borren mi numero",
        "numero equivocado",
        "no mas mensajes",
        "ya no quiero recibir",
    ),
    "fr": (
        "ne m envoyez plus",
        "ne plus m envoyer",
        "arretez de m envoyer",
        "arretez les messages",
        "retirez moi",
        "supprimez mon numero",
        "mauvais numero",
        "plus de messages",
        "ne me contactez plus",
    ),
    "ru": (
        "не пишите мне",
        "не присылайте",
        "не отправляйте",
        "перестаньте писать",
        "перестаньте присылать",
        "удалите мой номер",
        "удалите меня",
        "ошиблись номером",
        "неправильный номер",
        "больше не пишите",
    ),
    "bg": (
        "не ми пишете",
        "не ми изпращайте",
        "спрете да ми пишете",
        "спрете да ми изпращате",
        "махнете ме",
        "премахнете ме",
        "изтрийте номера ми",
        "грешен номер",
        "повече не ми пишете",
    ),
}

# Softer signals: never an opt-out by themselves, always flagged for staff review.
_POSSIBLE_OPT_OUT_PHRASES = (
    "not interested",
    "no longer interested",
    "no thanks",
    "no thank you",
    "who is this",
    "how did you get my number",
    "no me interesa",
    "pas interesse",
    "не интересно",
    "не се интересувам",
)

_HELP: dict[str, tuple[str, ...]] = {
    "en": ("HELP", "INFO"),
    "es": ("AYUDA", "HELP", "INFO"),
    "fr": ("AIDE", "HELP", "INFO"),
    "ru": ("ПОМОЩЬ", "СПРАВКА", "ИНФО", "HELP"),
    "bg": ("ПОМОЩ", "ИНФО", "ИНФОРМАЦИЯ", "HELP"),
}

# START-family words bring back a subscription the subscriber had confirmed before.
_RESTART: dict[str, tuple[str, ...]] = {
    "en": ("START", "UNSTOP", "RESUME"),
    "es": ("START", "REANUDAR", "INICIO"),
    "fr": ("START", "REPRENDRE", "DEMARRER"),
    "ru": ("START", "СТАРТ", "ВОЗОБНОВИТЬ"),
    "bg": ("START", "СТАРТ", "ВЪЗОБНОВИ"),
}

# JOIN-family words always ask for a fresh confirmation (double opt-in).
_JOIN: dict[str, tuple[str, ...]] = {
    "en": ("JOIN", "SUBSCRIBE"),
    "es": ("UNIRME", "ALTA", "SUSCRIBIR", "SUSCRIBIRME"),
    "fr": ("ADHERER", "INSCRIRE", "ABONNER"),
    "ru": ("ПОДПИСАТЬСЯ", "ПОДПИСКА"),
    "bg": ("АБОНИРАЙ", "АБОНАМЕНТ", "ПРИСЪЕДИНИ"),
}

_CONFIRM: dict[str, tuple[str, ...]] = {
    "en": ("YES", "Y", "YEP", "YEAH", "YES PLEASE"),
    "es": ("SI", "CLARO"),
    "fr": ("OUI",),
    "ru": ("ДА",),
    "bg": ("ДА",),
}

# A bare "no" (often a reply to a confirmation request) is a decline, not clearly a
# revocation: flagged for review.
_BARE_REFUSALS = frozenset({"no", "nope", "nah", "non", "нет", "не"})

# Polite filler that does not change what a keyword text means ("STOP please", "YES thanks").
_FILLER = frozenset(
    normalize(word)
    for word in (
        "please pls plz now thanks thank you thx ok okay just me it all"
        " por favor gracias ya"
        " merci s il vous plait svp"
        " пожалуйста спасибо"
        " моля благодаря"
    ).split()
)


def _index(table: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """normalised word -> the languages it belongs to, in `LANGUAGES` order."""
    index: dict[str, list[str]] = {}
    for language in LANGUAGES:
        for word in table.get(language, ()):
            index.setdefault(normalize(word), []).append(language)
    return {word: tuple(dict.fromkeys(languages)) for word, languages in index.items()}


OPT_OUT_COMMON_WORDS = _index(_OPT_OUT_COMMON)
OPT_OUT_STRONG_WORDS = _index(_OPT_OUT_STRONG)
OPT_OUT_WORDS = {**OPT_OUT_COMMON_WORDS, **OPT_OUT_STRONG_WORDS}
OPT_OUT_PHRASES = _index(_OPT_OUT_PHRASES)
HELP_WORDS = _index(_HELP)
RESTART_WORDS = _index(_RESTART)
JOIN_WORDS = _index(_JOIN)
CONFIRM_WORDS = _index(_CONFIRM)
POSSIBLE_OPT_OUT_PHRASES = tuple(normalize(p) for p in _POSSIBLE_OPT_OUT_PHRASES)

# Every built-in keyword; a program keyword must not be one of these.
RESERVED_WORDS = frozenset(
    {*OPT_OUT_WORDS, *HELP_WORDS, *RESTART_WORDS, *CONFIRM_WORDS, *OPT_OUT_PHRASES}
)

# What a keywords-only text ("YES STOP", "SUBSCRIBE, ALTO") may be made of, program keywords
# aside: JOIN-family words count too, or "JOIN STOP" on a number without a JOIN program
# would lose its opt-out.
_KEYWORD_TEXT_WORDS = RESERVED_WORDS | frozenset(JOIN_WORDS) | _FILLER

_LONGEST_OPT_OUT = max(len(word.split(" ")) for word in OPT_OUT_WORDS)


def _by_first_word(entries: Iterable[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """Multi-word entries grouped by their first word, so a text is scanned once."""
    grouped: dict[str, list[tuple[str, list[str]]]] = {}
    for entry in entries:
        parts = entry.split(" ")
        grouped.setdefault(parts[0], []).append((entry, parts))
    return grouped


_OPT_OUT_PHRASES_BY_FIRST = _by_first_word(OPT_OUT_PHRASES)
_OPT_OUT_STRONG_BY_FIRST = _by_first_word(OPT_OUT_STRONG_WORDS)
_OPT_OUT_WORDS_BY_FIRST = _by_first_word(OPT_OUT_WORDS)
_POSSIBLE_BY_FIRST = _by_first_word((*OPT_OUT_COMMON_WORDS, *POSSIBLE_OPT_OUT_PHRASES))
