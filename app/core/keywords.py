"""What a subscriber's text means: normalise it, classify its intent, guess its language.

Pure: no Flask, no database. `classify()` is a function of the text and the
program keywords of the number that was texted, nothing else, so it can be
tested in microseconds and reasoned about in one place.

How a text is read, in order (the first rule that matches wins):

1. **Opt-out** (`opt_out`). Opt-out wins over every other intent.
   - an opt-out word or phrase is the whole text, or its first word(s):
     "STOP", "Stop. Thank you", "opt out now", "ALTO", "СТОП";
   - the text is made only of keywords and polite filler, one of them an
     opt-out word: "YES STOP", "please stop", "ok cancel";
   - an unambiguous opt-out word appears anywhere ("how do I unsubscribe"):
     UNSUBSCRIBE, OPTOUT, REVOKE and their equivalents have no other meaning;
   - a plain-language revocation appears anywhere: "please stop texting me",
     "remove me from this list", "take me off your list", "wrong number".
   The word sets are the union of the carrier (CTIA), FCC (2024 revocation
   order) and Twilio sets, plus their Spanish, French, Russian and Bulgarian
   equivalents.
2. **Help** (`help`): the first word is HELP, INFO or an equivalent.
3. **Opt-in** (`opt_in`): the whole text (filler aside) is a program keyword of
   the number texted, JOIN, START, UNSTOP or an equivalent.
4. **Confirm** (`confirm`): the whole text (filler aside) is YES, Y or an equivalent.
5. Anything else is `other`. When an everyday opt-out word (STOP, END, QUIT,
   CANCEL, …) or a softer phrase ("not interested") appears further inside it
   ("We have got to stop this bill"), it is flagged `possible_opt_out` for staff
   review rather than guessed at.

Normalisation (`normalize`): Unicode NFKC (full-width letters become ASCII),
case-folding, accents stripped (ARRÊT = ARRET), and every run of punctuation,
symbols, emoji and white space collapsed to one space.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.core.intents import CONFIRM, HELP, OPT_IN, OPT_OUT, OTHER, Intent

INTENTS = tuple(Intent)
LANGUAGES = ("en", "es", "fr", "ru", "bg")

RULE_MAX = 80


def normalize(text: str) -> str:
    """The text as keywords are matched: NFKC, case-folded, no accents, single spaces."""
    # Accents go before case-folding too: a few combining marks fold into letters
    # (U+0345 becomes "ι"), which would glue a stray letter onto "STOP".
    compatible = unicodedata.normalize("NFKD", text)
    unaccented = "".join(char for char in compatible if unicodedata.category(char) != "Mn")
    folded = unicodedata.normalize("NFKC", unaccented).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    words: list[str] = []
    current: list[str] = []
    for char in decomposed:
        category = unicodedata.category(char)
        if category == "Mn":  # combining accents: ARRÊT -> ARRET
            continue
        if category[0] in "LN":
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    words = _join_spelled_out(words)
    return unicodedata.normalize("NFC", " ".join(words))


def _join_spelled_out(words: list[str]) -> list[str]:
    """'S T O P' and 'S.T.O.P.' read as one word when every word is a single letter."""
    if len(words) >= 3 and all(len(word) == 1 and word.isalpha() for word in words):
        return ["".join(words)]
    return words


def tokens(text: str) -> list[str]:
    """The normalised words of `text`."""
    normalized = normalize(text)
    return normalized.split(" ") if normalized else []


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


def words_for(intent: str, language: str) -> tuple[str, ...]:
    """The keywords of `intent` in `language`, as typed (for linting reply texts)."""
    table = {
        OPT_OUT: {k: _OPT_OUT_COMMON.get(k, ()) + _OPT_OUT_STRONG.get(k, ()) for k in LANGUAGES},
        HELP: _HELP,
        CONFIRM: _CONFIRM,
        OPT_IN: {k: _JOIN.get(k, ()) + _RESTART.get(k, ()) for k in LANGUAGES},
    }[intent]
    return tuple(table.get(language, ()))


@dataclass(frozen=True)
class Classification:
    """What a text means.

    `rule` names the rule and word that matched (kept in the ledger); `languages`
    are the languages that word belongs to, most likely first (empty when the
    word says nothing about language, like a brand keyword); `program_id` is
    set when a program keyword matched; `restart` is set for START-family words.
    """

    intent: Intent
    rule: str | None = None
    languages: tuple[str, ...] = ()
    program_id: str | None = None
    possible_opt_out: bool = False
    restart: bool = False


def _rule(name: str, word: str) -> str:
    return f"{name}:{word}"[:RULE_MAX]


def _find(words: list[str], grouped: Mapping[str, list[tuple[str, list[str]]]]) -> str | None:
    """The first entry of `grouped` that appears as consecutive words of `words`."""
    for i, word in enumerate(words):
        for entry, parts in grouped.get(word, ()):
            if words[i : i + len(parts)] == parts:
                return entry
    return None


def _prefix_match(words: list[str], index: Mapping[str, tuple[str, ...]], longest: int):
    """The longest entry of `index` that the text starts with, as (entry, languages)."""
    for size in range(min(longest, len(words)), 0, -1):
        candidate = " ".join(words[:size])
        if candidate in index:
            return candidate, index[candidate]
    return None


def _all_keywords(words: list[str], keyword_map: Mapping[str, str]) -> bool:
    """Is every word a keyword (any intent), filler, or part of a multi-word keyword?"""
    i = 0
    while i < len(words):
        for size in range(min(4, len(words) - i), 0, -1):
            candidate = " ".join(words[i : i + size])
            if candidate in _KEYWORD_TEXT_WORDS or candidate in keyword_map:
                i += size
                break
        else:
            return False
    return True


def classify(body: str, keyword_map: Mapping[str, str] | None = None) -> Classification:
    """Classify one inbound text.

    `keyword_map` maps each program keyword of the number texted (normalised
    with `normalize`) to its program id.
    """
    keyword_map = keyword_map or {}
    words = tokens(body)
    if not words:
        return Classification(OTHER)
    text = " ".join(words)
    meaningful = [w for w in words if w not in _FILLER] or words
    meaningful_text = " ".join(meaningful)

    # 1. Opt-out, in every way a person would say it.
    first = _prefix_match(words, OPT_OUT_WORDS, _LONGEST_OPT_OUT)
    if first:
        word, languages = first
        return Classification(OPT_OUT, _rule("opt_out.first_word", word), languages)
    if _all_keywords(words, keyword_map):
        word = _find(words, _OPT_OUT_WORDS_BY_FIRST)
        if word:
            return Classification(
                OPT_OUT, _rule("opt_out.keywords_only", word), OPT_OUT_WORDS[word]
            )
    strong = _find(words, _OPT_OUT_STRONG_BY_FIRST)
    if strong:
        return Classification(
            OPT_OUT, _rule("opt_out.strong_word", strong), OPT_OUT_STRONG_WORDS[strong]
        )
    phrase = _find(words, _OPT_OUT_PHRASES_BY_FIRST)
    if phrase:
        return Classification(OPT_OUT, _rule("opt_out.phrase", phrase), OPT_OUT_PHRASES[phrase])

    possible = _find(words, _POSSIBLE_BY_FIRST) is not None or meaningful_text in _BARE_REFUSALS

    # 2. Help, as the first word.
    if words[0] in HELP_WORDS:
        word = words[0]
        return Classification(
            HELP, _rule("help.first_word", word), HELP_WORDS[word], possible_opt_out=possible
        )

    # 3. Opt-in: a program keyword, or a JOIN / START word, as the whole text.
    for candidate in (meaningful_text, text):
        if candidate in keyword_map:
            return Classification(
                OPT_IN,
                _rule("opt_in.program_keyword", candidate),
                (),
                program_id=keyword_map[candidate],
                possible_opt_out=possible,
            )
    if meaningful_text in RESTART_WORDS:
        return Classification(
            OPT_IN,
            _rule("opt_in.restart", meaningful_text),
            RESTART_WORDS[meaningful_text],
            possible_opt_out=possible,
            restart=True,
        )
    if meaningful_text in JOIN_WORDS:
        return Classification(
            OPT_IN,
            _rule("opt_in.join", meaningful_text),
            JOIN_WORDS[meaningful_text],
            possible_opt_out=possible,
        )

    # 4. Confirm: YES and its equivalents, as the whole text.
    for candidate in (meaningful_text, text):
        if candidate in CONFIRM_WORDS:
            return Classification(
                CONFIRM,
                _rule("confirm.only_word", candidate),
                CONFIRM_WORDS[candidate],
                possible_opt_out=possible,
            )

    # 5. Anything else.
    return Classification(
        OTHER, "other.possible_opt_out" if possible else None, (), possible_opt_out=possible
    )
