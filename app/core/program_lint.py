"""`flask --app app programs check`: every program against the carrier rules and its own promises.

- Each reply text carries what the carrier rules require (CTIA Messaging Principles
  and Best Practices; the Short Code Monitoring Handbook) and fits its segments.
- Each program declares its `purpose` (marketing or informational): the sending
  rules (`app.core.sending_rules`) depend on it.
- A declared `frequency_cap` matches the frequency the texts disclose in every
  language ("Up to 4 msgs/mo" means at most 4 per calendar month).

`lint_message_body` checks the body of a program message sent through the API.
Pure of Flask and the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.core.keywords import CONFIRM, HELP, LANGUAGES, OPT_OUT, normalize, tokens, words_for
from app.core.programs import TEXT_NAMES, Catalog, Program, ProgramTexts
from app.core.sending_rules import ProgramCap

# ----------------------------------------------------------------------------------------------
# SMS segments: GSM-7 (160 characters, 153 per part) or UCS-2 (70, 67 per part)

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    """How a text travels: its encoding, its length in that encoding, and its parts."""

    encoding: str
    units: int
    count: int


def segments(text: str) -> Segments:
    """The encoding and number of SMS parts `text` needs."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        count = 1 if units <= 160 else math.ceil(units / 153)
        return Segments("GSM-7", units, count)
    units = len(text.encode("utf-16-le")) // 2
    count = 1 if units <= 70 else math.ceil(units / 67)
    return Segments("UCS-2", units, count)


# ----------------------------------------------------------------------------------------------
# Carrier rules (CTIA Messaging Principles and Best Practices; Short Code Monitoring Handbook)

RATES_PHRASES = {
    "en": ("msg & data rates may apply", "message and data rates may apply"),
    "es": (
        "pueden aplicarse tarifas de mensajes y datos",
        "se pueden aplicar tarifas de mensajes y datos",
    ),
    "fr": ("des frais de messages et de donnees peuvent s appliquer",),
    "ru": ("может взиматься плата за сообщения и данные",),
    "bg": ("може да се начислят такси за съобщения и данни",),
}

# What each text must carry. Names: the program or brand name; frequency; rates;
# help / stop / yes: the keyword in that language; terms / privacy: the URLs;
# contact: the help contact; keyword: one of the program's keywords.
REQUIRED_ELEMENTS = {
    "disclosure": ("name", "frequency", "rates", "help", "stop", "terms", "privacy"),
    "confirm_request": ("name", "yes", "frequency", "rates", "help", "stop", "terms"),
    "welcome": ("name", "frequency", "rates", "help", "stop", "terms"),
    "resubscribed": ("name", "frequency", "rates", "help", "stop"),
    "help": ("name", "contact", "frequency", "rates", "stop"),
    "already_subscribed": ("name", "help", "stop"),
    "opt_out_confirmation": ("name",),
    "how_to_join": ("name", "keyword"),
}

ELEMENT_DESCRIPTIONS = {
    "name": "the program or brand name",
    "yes": "how to confirm (YES)",
    "frequency": "the message frequency",
    "rates": '"Msg & data rates may apply" (or its translation)',
    "help": "HELP instructions",
    "stop": "STOP (opt-out) instructions",
    "terms": "the terms link",
    "privacy": "the privacy policy link",
    "contact": "the help contact",
    "keyword": "a program keyword",
}

# Texts sent to an opted-out number must be short: one part, nothing more.
SINGLE_SEGMENT_TEXTS = frozenset({"opt_out_confirmation"})


def _has_word(text: str, words: Iterable[str]) -> bool:
    """Does `text` contain one of `words` (each possibly several words) as whole words?"""
    padded = f" {normalize(text)} "
    return any(f" {normalize(word)} " in padded for word in words if normalize(word))


def _has_element(element: str, text: str, program: Program, texts: ProgramTexts) -> bool:
    normalized = normalize(text)
    language = texts.language
    if element == "name":
        return _has_word(text, (program.name, program.brand))
    if element == "frequency":
        return normalize(texts.frequency) in normalized
    if element == "rates":
        return any(normalize(p) in normalized for p in RATES_PHRASES.get(language, ()))
    if element == "help":
        return _has_word(text, words_for(HELP, language) + ("HELP",))
    if element == "stop":
        return _has_word(text, words_for(OPT_OUT, language) + ("STOP",))
    if element == "yes":
        return _has_word(text, words_for(CONFIRM, language) + ("YES",))
    if element == "terms":
        return program.terms_url in text
    if element == "privacy":
        return bool(program.privacy_url) and program.privacy_url in text
    if element == "contact":
        return program.help_contact in text
    if element == "keyword":
        return any(set(tokens(k)) <= set(normalized.split(" ")) for k in program.keywords)
    raise ValueError(element)


def lint_program(program: Program) -> list[str]:
    """Every violation in one program (texts, purpose, frequency cap), as readable sentences."""
    problems: list[str] = []
    if program.purpose is None:
        problems.append(
            f'{program.id}: declare its purpose: purpose = "marketing" or "informational"'
        )
    problems.extend(lint_frequency_cap(program))
    for language, texts in program.texts.items():
        for name in TEXT_NAMES:
            text = getattr(texts, name)
            where = f"{program.id} [{language}] {name}"
            for element in REQUIRED_ELEMENTS[name]:
                if not _has_element(element, text, program, texts):
                    problems.append(f"{where}: missing {ELEMENT_DESCRIPTIONS[element]}")
            if name == "disclosure":
                continue  # kept as evidence, not sent as one SMS
            parts = segments(text)
            limit = 1 if name in SINGLE_SEGMENT_TEXTS else program.max_segments
            if parts.count > limit:
                problems.append(
                    f"{where}: {parts.units} {parts.encoding} characters need {parts.count} "
                    f"segments; at most {limit} allowed"
                )
    return problems


# ----------------------------------------------------------------------------------------------
# The disclosed frequency and the declared cap

# Words that name a calendar period in a disclosed frequency, per supported language.
PERIOD_WORDS = {
    "day": frozenset({"day", "days", "daily", "dia", "dias", "jour", "jours", "день", "дн", "ден"}),
    "week": frozenset(
        {"wk", "wks", "week", "weeks", "weekly", "semana", "semaine", "sem", "нед", "седм"}
    ),
    "month": frozenset({"mo", "mos", "month", "months", "monthly", "mes", "mois", "мес", "месяц"}),
}


def disclosed_frequency(text: str) -> ProgramCap | None:
    """The cap a disclosed frequency states ("Up to 4 msgs/mo" → 4 per month); None when it
    states no single number and period ("Msg frequency varies")."""
    words = normalize(text).split(" ")
    numbers = [word for word in words if re.fullmatch(r"[0-9]+", word)]
    periods = {period for period, names in PERIOD_WORDS.items() if names & set(words)}
    if len(numbers) != 1 or len(periods) != 1:
        return None
    return ProgramCap(int(numbers[0]), periods.pop())


def lint_frequency_cap(program: Program) -> list[str]:
    """A declared cap must say what every language's disclosed frequency says."""
    cap = program.frequency_cap
    if cap is None:
        return []
    problems = []
    for language, texts in program.texts.items():
        stated = disclosed_frequency(texts.frequency)
        if stated is None:
            problems.append(
                f"{program.id} [{language}]: frequency_cap is {cap.summary()}, but the disclosed "
                f"frequency {texts.frequency!r} states no number per day, week or month"
            )
        elif stated != cap:
            problems.append(
                f"{program.id} [{language}]: frequency_cap is {cap.summary()}, but the disclosed "
                f"frequency {texts.frequency!r} says {stated.summary()}"
            )
    return problems


# ----------------------------------------------------------------------------------------------
# Program messages sent through the API

MISSING_NAME = "missing_name"
MISSING_STOP = "missing_stop"
TOO_LONG = "too_long"
EMPTY = "empty"


def lint_message_body(program: Program, body: str) -> tuple[str, ...]:
    """What is wrong with a program message's body, as short ids (empty when nothing is).

    A message must name the program or brand and tell how to opt out (STOP in any
    supported language), and fit in the program's `max_segments`.
    """
    if not body.strip():
        return (EMPTY,)
    problems = []
    if not _has_word(body, (program.name, program.brand)):
        problems.append(MISSING_NAME)
    stop_words = {"STOP"} | {w for lang in LANGUAGES for w in words_for(OPT_OUT, lang)}
    if not _has_word(body, stop_words):
        problems.append(MISSING_STOP)
    if segments(body).count > program.max_segments:
        problems.append(TOO_LONG)
    return tuple(problems)


def lint_catalog(catalog: Catalog) -> list[str]:
    """Every carrier-rule violation in the catalog."""
    return [problem for program in catalog.programs for problem in lint_program(program)]
