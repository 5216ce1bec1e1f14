"""Keyword matching (app.core.keywords): pure functions, tested directly in microseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import keywords
from app.core.keywords import CONFIRM, HELP, OPT_IN, OPT_OUT, OTHER, classify, normalize

PROGRAM_KEYWORDS = {"join": "demo", "deals": "deals", "vip club": "vip"}


def intent(text: str) -> str:
    return classify(text, PROGRAM_KEYWORDS).intent


# --- normalisation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("STOP", "stop"),
        ("  Stop.  ", "stop"),
        ("ＳＴＯＰ", "stop"),  # full-width letters (NFKC)
        ("ARRÊT", "arret"),  # accents stripped
        ("Ｎo Más", "no mas"),
        ("🛑 stop 🛑", "stop"),  # emoji dropped
        ("stop!!!", "stop"),
        ("don't text me", "don t text me"),
        ("S.T.O.P.", "stop"),  # spelled out
        ("СТОП", "стоп"),
        ("ПОМОЩЬ", "помощь"),
        ("Straße", "strasse"),  # case-folding, not lower()
        ("", ""),
        ("   ", ""),
        ("...", ""),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


# --- every keyword of every language ----------------------------------------------------------


def all_words(table):
    return [(language, word) for language, words in table.items() for word in words]


@pytest.mark.parametrize(
    ("language", "word"),
    all_words(keywords._OPT_OUT_COMMON) + all_words(keywords._OPT_OUT_STRONG),
)
def test_every_opt_out_word_opts_out_in_its_language(language, word):
    for text in (word, word.lower(), f"{word}.", f"{word} please", f"  {word.title()}!  "):
        result = classify(text, PROGRAM_KEYWORDS)
        assert result.intent == OPT_OUT, text
        assert language in result.languages, text


@pytest.mark.parametrize(("language", "phrase"), all_words(keywords._OPT_OUT_PHRASES))
def test_every_plain_language_revocation_opts_out_anywhere_in_a_text(language, phrase):
    for text in (phrase, f"Hi, {phrase} thanks", phrase.upper()):
        result = classify(text, PROGRAM_KEYWORDS)
        assert result.intent == OPT_OUT, text
        assert result.rule.startswith("opt_out.")
        assert language in result.languages


@pytest.mark.parametrize(("language", "word"), all_words(keywords._HELP))
def test_every_help_word(language, word):
    for text in (word, word.lower() + "?", f"{word} me"):
        result = classify(text, PROGRAM_KEYWORDS)
        assert result.intent == HELP, text
        assert language in result.languages


@pytest.mark.parametrize(("language", "word"), all_words(keywords._CONFIRM))
def test_every_confirm_word(language, word):
    for text in (word, word.lower() + "!", f"{word} thanks"):
        result = classify(text, PROGRAM_KEYWORDS)
        assert result.intent == CONFIRM, text
        assert language in result.languages


@pytest.mark.parametrize(("language", "word"), all_words(keywords._RESTART))
def test_every_start_word_is_a_restart(language, word):
    result = classify(word, PROGRAM_KEYWORDS)
    assert (result.intent, result.restart, result.program_id) == (OPT_IN, True, None)
    assert language in result.languages


@pytest.mark.parametrize(("language", "word"), all_words(keywords._JOIN))
def test_every_join_word_is_a_fresh_opt_in(language, word):
    result = classify(word, {})
    assert (result.intent, result.restart) == (OPT_IN, False)
    assert language in result.languages


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # carrier / FCC / Twilio words, as the whole text or the first word
        ("STOP", OPT_OUT),
        ("Stop. Thank you", OPT_OUT),
        ("stop please", OPT_OUT),
        ("STOP ALL", OPT_OUT),
        ("stopall", OPT_OUT),
        ("End", OPT_OUT),
        ("QUIT!", OPT_OUT),
        ("cancel my alerts", OPT_OUT),
        ("Revoke", OPT_OUT),
        ("opt-out", OPT_OUT),
        ("Opt out", OPT_OUT),
        ("OPTOUT", OPT_OUT),
        ("unsub", OPT_OUT),
        # opt-out wins over every other intent
        ("YES STOP", OPT_OUT),
        ("HELP STOP", OPT_OUT),
        ("JOIN stop", OPT_OUT),
        ("please stop", OPT_OUT),
        ("ok, STOP.", OPT_OUT),
        ("Yes, but please stop texting me", OPT_OUT),
        ("Help me, how do I unsubscribe?", OPT_OUT),
        # plain-language revocations
        ("please stop texting me", OPT_OUT),
        ("Remove me from this list", OPT_OUT),
        ("take me off your list", OPT_OUT),
        ("Don't text me", OPT_OUT),
        ("do not contact me again", OPT_OUT),
        ("wrong number", OPT_OUT),
        ("Wrong number, who is this?", OPT_OUT),
        ("No more texts", OPT_OUT),
        # other languages
        ("ALTO", OPT_OUT),
        ("Cancelar por favor", OPT_OUT),
        ("no me envíen más mensajes", OPT_OUT),
        ("ARRÊT", OPT_OUT),
        ("Désabonner", OPT_OUT),
        ("СТОП", OPT_OUT),
        ("Отписаться", OPT_OUT),
        ("не пишите мне больше", OPT_OUT),
        ("Отпиши", OPT_OUT),
        ("грешен номер", OPT_OUT),
        # help, opt-in, confirm
        ("HELP", HELP),
        ("info", HELP),
        ("AYUDA", HELP),
        ("aide", HELP),
        ("Помощь", HELP),
        ("помощ", HELP),
        ("JOIN", OPT_IN),
        ("join please", OPT_IN),
        ("Deals", OPT_IN),
        ("VIP club", OPT_IN),
        ("START", OPT_IN),
        ("unstop", OPT_IN),
        ("YES", CONFIRM),
        ("y", CONFIRM),
        ("Yes please", CONFIRM),
        ("Sí", CONFIRM),
        ("OUI", CONFIRM),
        ("да", CONFIRM),
        # anything else
        ("Hello there", OTHER),
        ("What time is the sale?", OTHER),
        ("I want to join the club meeting tomorrow", OTHER),
        ("", OTHER),
        ("🙂", OTHER),
        ("<script>alert(1)</script>", OTHER),
        ("'; DROP TABLE consent_events; --", OTHER),
    ],
)
def test_rules(text, expected):
    assert intent(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "We have got to stop this bill",
        "Can't wait for the end of the season",
        "I had to cancel the meeting, sorry",
        "Not interested",
        "no",
        "Who is this?",
        "vamos a parar en la tienda",
        "Надо стоп-кран починить",
    ],
)
def test_stop_words_inside_other_sentences_are_flagged_not_opt_outs(text):
    result = classify(text, PROGRAM_KEYWORDS)
    assert result.intent == OTHER
    assert result.possible_opt_out is True


@pytest.mark.parametrize("text", ["Hello", "What time is the sale?", "YES", "JOIN", "HELP"])
def test_ordinary_texts_are_not_flagged(text):
    assert classify(text, PROGRAM_KEYWORDS).possible_opt_out is False


def test_program_keyword_names_its_program_and_no_language():
    result = classify("deals", PROGRAM_KEYWORDS)
    assert (result.intent, result.program_id, result.languages) == (OPT_IN, "deals", ())
    assert result.rule == "opt_in.program_keyword:deals"


def test_a_word_shared_by_languages_lists_them_all():
    assert set(classify("СТОП").languages) == {"ru", "bg"}
    assert set(classify("ДА").languages) == {"ru", "bg"}


def test_rule_is_bounded_for_the_ledger():
    long_word = "remove me " + "x" * 500
    assert len(classify(long_word).rule) <= keywords.RULE_MAX


# --- properties ------------------------------------------------------------------------------

OPT_OUT_WORDS = sorted(
    {word for words in keywords._OPT_OUT_COMMON.values() for word in words}
    | {word for words in keywords._OPT_OUT_STRONG.values() for word in words}
)


@given(
    word=st.sampled_from(OPT_OUT_WORDS),
    separator=st.sampled_from([" ", ". ", ", ", "! ", "\n", " - ", "... "]),
    rest=st.text(max_size=80),
    shout=st.booleans(),
)
def test_any_text_whose_first_word_is_an_opt_out_word_opts_out(word, separator, rest, shout):
    text = (word.upper() if shout else word.lower()) + separator + rest
    assert classify(text, PROGRAM_KEYWORDS).intent == OPT_OUT


@given(st.text(max_size=300))
def test_classify_never_fails_and_always_answers_a_known_intent(text):
    result = classify(text, PROGRAM_KEYWORDS)
    assert result.intent in keywords.INTENTS
    assert result.rule is None or len(result.rule) <= keywords.RULE_MAX


@given(
    prefix=st.sampled_from(["YES", "HELP", "JOIN", "please", "ok"]),
    word=st.sampled_from(OPT_OUT_WORDS),
)
def test_a_keyword_only_text_with_an_opt_out_word_opts_out(prefix, word):
    assert classify(f"{prefix} {word}", PROGRAM_KEYWORDS).intent == OPT_OUT


def test_reserved_words_cover_every_built_in_keyword():
    for word in ("stop", "help", "yes", "start", "unstop", "стоп", "ayuda"):
        assert word in keywords.RESERVED_WORDS


# --- hostile-input properties (docs/reliability.md, "Hostile input") ---------------------------

# Separators that can never become letters or digits under NFKC: ASCII and typographic
# punctuation, odd white space (no-break, ideographic, zero-width), full-width punctuation and
# emoji. (Symbols such as "™" or "㎏" are not here on purpose: NFKC turns them into letters.)
SEPARATORS = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    ".",
    ",",
    "!",
    "?",
    "...",
    "…",
    " - ",
    "—",
    "/",
    "(",
    ")",
    '"',
    "«",
    "»",
    "¡",
    "¿",
    "*",
    "#",
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u200b",  # zero-width space
    "！",  # full-width exclamation mark
    "🛑",
    "🙂",
    "❤️",
    "👍🏽",
    "🇺🇸",
]
ACCENTS = [chr(code) for code in range(0x0300, 0x0370)]  # the combining diacritics block

separators = st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=3).map("".join)
noise = st.text(max_size=60)


def disguise(data, word: str) -> str:
    """`word` as a person (or an attacker) might type it: any case, accents, full-width letters."""
    typed = []
    for char in word:
        if char == " ":
            typed.append(data.draw(separators))
            continue
        char = char.upper() if data.draw(st.booleans()) else char.lower()
        if "A" <= char <= "Z" and data.draw(st.integers(0, 4)) == 0:
            char = chr(ord(char) + 0xFEE0)  # full-width: NFKC folds it back
        typed.append(char)
        typed.extend(data.draw(st.lists(st.sampled_from(ACCENTS), max_size=2)))
    return "".join(typed)


def language_words(table) -> list[tuple[str, str]]:
    return sorted({(language, word) for language, words in table.items() for word in words})


@given(st.text(max_size=200), st.sampled_from([{}, PROGRAM_KEYWORDS]))
def test_classifying_the_normalised_text_gives_the_same_result(text, keyword_map):
    assert classify(normalize(text), keyword_map) == classify(text, keyword_map)


@given(data=st.data(), entry=st.sampled_from(language_words(keywords._OPT_OUT_STRONG)))
def test_an_opt_out_only_word_anywhere_in_any_noise_opts_out(data, entry):
    """UNSUBSCRIBE, DESABONNER, ОТПИСАТЬСЯ… mean nothing else: wherever they stand, they win."""
    language, word = entry
    text = (
        data.draw(noise)
        + data.draw(separators)
        + disguise(data, word)
        + data.draw(separators)
        + data.draw(noise)
    )
    result = classify(text, PROGRAM_KEYWORDS)
    assert result.intent == OPT_OUT, text
    assert result.rule.startswith("opt_out.")


@given(
    data=st.data(),
    entry=st.sampled_from(
        language_words(keywords._OPT_OUT_COMMON) + language_words(keywords._OPT_OUT_STRONG)
    ),
)
def test_a_text_starting_with_any_opt_out_word_opts_out_whatever_follows(data, entry):
    """STOP, ALTO, ARRÊT, СТОП… as the first word, behind emoji or punctuation, in any case."""
    language, word = entry
    leading = data.draw(st.sampled_from(["", *SEPARATORS]))
    text = leading + disguise(data, word) + data.draw(separators) + data.draw(noise)
    result = classify(text, PROGRAM_KEYWORDS)
    assert result.intent == OPT_OUT, text
    assert language in result.languages or result.rule.startswith("opt_out.strong")


@given(
    data=st.data(),
    opt_out=st.sampled_from(
        language_words(keywords._OPT_OUT_COMMON) + language_words(keywords._OPT_OUT_STRONG)
    ),
    others=st.lists(
        st.sampled_from(
            language_words(keywords._CONFIRM)
            + language_words(keywords._HELP)
            + language_words(keywords._JOIN)
            + language_words(keywords._RESTART)
            + [("en", "join"), ("en", "deals"), ("en", "please"), ("es", "por favor")]
        ),
        min_size=1,
        max_size=4,
    ),
    position=st.integers(0, 4),
)
def test_an_opt_out_word_among_other_keywords_is_never_lost(data, opt_out, others, position):
    """ "YES STOP", "HELP! ALTO", "JOIN… СТОП please": opt-out wins over every other intent."""
    words = [word for _, word in others]
    words.insert(min(position, len(words)), opt_out[1])
    text = data.draw(separators).join(disguise(data, word) for word in words)
    assert classify(text, PROGRAM_KEYWORDS).intent == OPT_OUT, text


@pytest.mark.parametrize("text", ["JOIN STOP", "subscribe, stop", "UNIRME ALTO", "Abonner arrêt"])
def test_join_words_with_an_opt_out_word_opt_out_on_any_number(text):
    """Found by the property above: JOIN-family words were not keywords for the opt-out rule."""
    assert classify(text, {}).intent == OPT_OUT


@pytest.mark.parametrize("mark", ["\u0345", "\u0301", "\u0308\u0304"])
def test_any_combining_mark_is_dropped_before_case_folding(mark):
    """Found by the property above: U+0345 case-folds into the letter ι and hid "STOP"."""
    assert normalize(f"STOP{mark}") == "stop"
    assert classify(f"STOP{mark} now").intent == OPT_OUT


@pytest.mark.parametrize(
    "text", ["Стоп-кран сломан", "стоп-кран", "СТОП‐КАДР", "Stop-motion videos", "end-to-end?"]
)
def test_a_hyphenated_look_alike_is_flagged_never_opted_out(text):
    """The keyword glued into another word by a hyphen is not the keyword (but stays flagged)."""
    result = classify(text)
    assert result.intent != OPT_OUT and result.possible_opt_out


@pytest.mark.parametrize("text", ["STOP - thanks", "Стоп, кран сломан", "stop-please", "STOP-"])
def test_the_keyword_itself_before_a_hyphen_or_a_word_still_opts_out(text):
    assert classify(text).intent == OPT_OUT
