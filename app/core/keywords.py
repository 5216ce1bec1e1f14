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
     "remove me from this list", "take me off your list", "wrong number";
   - the grammar of a request to stop, in every language (`opt_out_grammar`):
     "No quiero recibir más mensajes", "Bórrenme de su lista", "Je ne veux
     plus recevoir de messages", "Не хочу получать сообщения", "Не ми
     пращайте повече съобщения".
   The word sets are the union of the carrier (CTIA), FCC (2024 revocation
   order) and Twilio sets, plus their Spanish, French, Russian and Bulgarian
   equivalents.
2. **Help** (`help`): the first word is HELP, INFO or an equivalent.
3. **Opt-in** (`opt_in`): the whole text (filler aside) is a program keyword of
   the number texted, JOIN, START, UNSTOP or an equivalent.
4. **Confirm** (`confirm`): the whole text (filler aside) is YES, Y or an equivalent.
5. Anything else is `other`. When an everyday opt-out word (STOP, END, QUIT,
   CANCEL, …) or a softer phrase ("not interested") appears further inside it
   ("We have got to stop this bill"), or a request to stop is only half there
   ("no me enviaron el código", "ya no quiero"), it is flagged `possible_opt_out`
   for staff review rather than guessed at.

The word tables are in `keyword_tables`, the grammar in `opt_out_grammar` (its words
in `opt_out_words`, their inflected forms from simplemma's dictionaries through the
table `opt_out_lexicon` ships).

Normalisation (`normalize`): Unicode NFKC (full-width letters become ASCII),
case-folding, accents stripped (ARRÊT = ARRET), and every run of punctuation,
symbols, emoji and white space collapsed to one space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.core.intents import CONFIRM, HELP, INTENTS, OPT_IN, OPT_OUT, OTHER, Intent
from app.core.keyword_tables import (  # noqa: F401 - the tables are part of this module's API
    _BARE_REFUSALS,
    _CONFIRM,
    _FILLER,
    _HELP,
    _JOIN,
    _KEYWORD_TEXT_WORDS,
    _LONGEST_OPT_OUT,
    _OPT_OUT_COMMON,
    _OPT_OUT_PHRASES,
    _OPT_OUT_PHRASES_BY_FIRST,
    _OPT_OUT_STRONG,
    _OPT_OUT_STRONG_BY_FIRST,
    _OPT_OUT_WORDS_BY_FIRST,
    _POSSIBLE_BY_FIRST,
    _RESTART,
    CONFIRM_WORDS,
    HELP_WORDS,
    JOIN_WORDS,
    LANGUAGES,
    OPT_OUT_COMMON_WORDS,
    OPT_OUT_PHRASES,
    OPT_OUT_STRONG_WORDS,
    OPT_OUT_WORDS,
    POSSIBLE_OPT_OUT_PHRASES,
    RESERVED_WORDS,
    RESTART_WORDS,
)
from app.core.normalization import normalize, tokens
from app.core.opt_out_grammar import read_opt_out
from app.core.opt_out_lexicon import warm  # noqa: F401 - for the web workers

RULE_MAX = 80

__all__ = [
    "CONFIRM",
    "HELP",
    "INTENTS",
    "Intent",
    "LANGUAGES",
    "OPT_IN",
    "OPT_OUT",
    "OTHER",
    "RESERVED_WORDS",
    "RULE_MAX",
    "Classification",
    "classify",
    "normalize",
    "tokens",
    "words_for",
    "warm",
]


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
    return _rule_text(f"{name}:{word}")


def _rule_text(rule: str) -> str:
    """A rule as the ledger keeps it: at most RULE_MAX characters."""
    return rule[:RULE_MAX]


def _find(words: list[str], grouped: Mapping[str, list[tuple[str, list[str]]]]) -> str | None:
    """The first entry of `grouped` that appears as consecutive words of `words`."""
    for i, word in enumerate(words):
        for entry, parts in grouped.get(word, ()):
            if words[i : i + len(parts)] == parts:
                return entry
    return None


# Hyphenated words that begin with an opt-out keyword but mean something else: the emergency
# brake, a freeze-frame, a brake light, stop-motion film, end-to-end encryption. Written
# glued with a hyphen they are one word, not the keyword, so such a text is not an opt-out
# by its first word; the keyword inside still flags it for review.
LOOK_ALIKE_COMPOUNDS = frozenset(
    {
        "стоп-кран",
        "стоп-кадр",
        "стоп-кадър",
        "стоп-сигнал",
        "стоп-линия",
        "stop-motion",
        "stop-loss",
        "stop-gap",
        "stop-start",
        "end-to-end",
        "end-user",
    }
)
_HYPHENS = "-\u2010\u2011"


def _starts_with_compound(body: str) -> bool:
    """Does the text start with one of `LOOK_ALIKE_COMPOUNDS`, hyphen and all?"""
    start = 0
    while start < len(body) and not body[start].isalnum():
        start += 1
    end = start
    while end < len(body) and (body[end].isalnum() or body[end] in _HYPHENS):
        end += 1
        if end - start > 24:
            return False
    word = body[start:end].casefold()
    for hyphen in _HYPHENS[1:]:
        word = word.replace(hyphen, "-")
    return word.strip("-") in LOOK_ALIKE_COMPOUNDS


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
    first = (
        None
        if _starts_with_compound(body)
        else _prefix_match(words, OPT_OUT_WORDS, _LONGEST_OPT_OUT)
    )
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
    grammar = read_opt_out(words)
    if grammar is not None and grammar.opt_out:
        return Classification(OPT_OUT, _rule_text(grammar.rule), (grammar.language,))

    possible = (
        grammar is not None
        or _find(words, _POSSIBLE_BY_FIRST) is not None
        or meaningful_text in _BARE_REFUSALS
    )

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
