"""The programs file: what each program is called, where it runs, and what it says.

`load_programs()` reads `PROGRAMS_FILE` (TOML) once, when the app is created, and
fails there with a clear message when the file is unusable. `lint_catalog()`
checks every reply text against the carrier rules (`flask --app app programs check`).

Pure of Flask and the database: the catalog is plain frozen dataclasses.

A program in TOML::

    [[programs]]
    id = "demo"                          # stable id, kept in the ledger
    brand = "Demo Co"
    name = "Demo Alerts"
    numbers = []                         # the numbers it runs on; none = every number
    keywords = ["JOIN"]                  # opt-in keywords (double opt-in follows)
    frequency = "Up to 4 msgs/mo"
    help_contact = "help@example.com"
    terms_url = "https://example.com/terms"
    privacy_url = "https://example.com/privacy"
    confirmation_window_hours = 24       # how long a YES may confirm a JOIN
    default_language = "en"

    [programs.texts.en]                  # one table per language
    frequency = "Up to 4 msgs/mo"        # optional: the frequency as written in this language
    disclosure = "…"                     # the disclosure in force, kept with every event
    confirm_request = "…"                # answer to JOIN: asks for YES
    welcome = "…"                        # answer to YES within the window
    already_subscribed = "…"
    opt_out_confirmation = "…"           # the one answer to an opt-out
    resubscribed = "…"                   # answer to START / UNSTOP
    help = "…"
    how_to_join = "…"                    # answer to YES with nothing to confirm
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.config import ConfigError
from app.core.keywords import (
    CONFIRM,
    HELP,
    LANGUAGES,
    OPT_OUT,
    RESERVED_WORDS,
    normalize,
    tokens,
    words_for,
)
from app.core.phones import normalize_sender, parse_phone

TEXT_NAMES = (
    "disclosure",
    "confirm_request",
    "welcome",
    "already_subscribed",
    "opt_out_confirmation",
    "resubscribed",
    "help",
    "how_to_join",
)

PROGRAM_FIELDS = {
    "id",
    "brand",
    "name",
    "numbers",
    "keywords",
    "frequency",
    "help_contact",
    "terms_url",
    "privacy_url",
    "confirmation_window_hours",
    "default_language",
    "max_segments",
    "texts",
}
REQUIRED_FIELDS = ("id", "brand", "name", "keywords", "frequency", "help_contact", "terms_url")


class ProgramsError(ConfigError):
    """The programs file cannot be used; raised when the app starts."""


@dataclass(frozen=True)
class ProgramTexts:
    """One program's reply texts in one language, exactly as they are sent."""

    language: str
    frequency: str
    disclosure: str
    confirm_request: str
    welcome: str
    already_subscribed: str
    opt_out_confirmation: str
    resubscribed: str
    help: str
    how_to_join: str


@dataclass(frozen=True)
class Program:
    """One SMS program (a campaign behind a keyword) and its texts per language."""

    id: str
    brand: str
    name: str
    numbers: tuple[str, ...]
    keywords: tuple[str, ...]
    frequency: str
    help_contact: str
    terms_url: str
    privacy_url: str | None
    confirmation_window: timedelta
    default_language: str
    texts: dict[str, ProgramTexts]
    max_segments: int = 3

    def runs_on(self, number: str) -> bool:
        """A program with no numbers runs on every number."""
        return not self.numbers or number in self.numbers

    def texts_for(self, languages: Sequence[str]) -> ProgramTexts:
        """The texts in the first of `languages` this program speaks, else its default language."""
        for language in languages:
            if language in self.texts:
                return self.texts[language]
        return self.texts[self.default_language]


@dataclass(frozen=True)
class Catalog:
    """Every configured program, in file order."""

    programs: tuple[Program, ...]
    source: Path | None = None
    _by_id: dict[str, Program] = field(default_factory=dict, repr=False, compare=False)
    _keyword_maps: dict[str, dict[str, str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._by_id.update({p.id: p for p in self.programs})

    def get(self, program_id: str) -> Program | None:
        return self._by_id.get(program_id)

    def for_number(self, number: str) -> list[Program]:
        """The programs that run on `number` (the number a subscriber texted)."""
        return [p for p in self.programs if p.runs_on(number)]

    def programs_touched(self, number_texted: str | None, also: str | None = None) -> list[str]:
        """The programs one consent change of a subscriber concerns, in file order.

        The programs on the number they texted (none when it is unknown), and `also`
        (the program a keyword named, or the program of the message or text in
        question) when it is not among them. Inbound texts, carrier opt-outs and
        staff decisions all ask this one question.
        """
        ids = [p.id for p in self.for_number(number_texted)] if number_texted is not None else []
        if also and also not in ids:
            ids.append(also)
        return ids

    def keyword_map(self, number: str) -> dict[str, str]:
        """Normalised keyword -> program id, for the programs on `number` (memoised)."""
        cached = self._keyword_maps.get(number)
        if cached is None:
            cached = {}
            for program in self.for_number(number):
                for keyword in program.keywords:
                    cached.setdefault(normalize(keyword), program.id)
            self._keyword_maps[number] = cached
        return cached


# ----------------------------------------------------------------------------------------------
# Loading


def load_programs(path: Path) -> Catalog:
    """Read and validate the programs file; `ProgramsError` says what is wrong and where."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProgramsError(f"PROGRAMS_FILE {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProgramsError(f"PROGRAMS_FILE {path} is not valid TOML: {exc}") from exc
    return parse_programs(raw, source=Path(path))


def parse_programs(raw: dict[str, Any], source: Path | None = None) -> Catalog:
    """Build a catalog from the parsed TOML document."""
    where = str(source or "programs")
    entries = raw.get("programs")
    if not isinstance(entries, list) or not entries:
        raise ProgramsError(f"{where}: define at least one [[programs]] table")
    programs: list[Program] = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ProgramsError(f"{where}: program #{position} is not a table")
        programs.append(_parse_program(entry, f"{where}: program #{position}"))

    ids = [p.id for p in programs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ProgramsError(f"{where}: duplicate program id(s): {', '.join(duplicates)}")
    _check_keyword_clashes(programs, where)
    return Catalog(tuple(programs), source)


def _parse_program(entry: dict[str, Any], where: str) -> Program:
    unknown = sorted(set(entry) - PROGRAM_FIELDS)
    if unknown:
        raise ProgramsError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [name for name in REQUIRED_FIELDS if not entry.get(name)]
    if missing:
        raise ProgramsError(f"{where}: missing {', '.join(missing)}")
    program_id = _string(entry, "id", where)
    where = f"{where} ({program_id})"
    if len(program_id) > 64 or not program_id.replace("-", "").replace("_", "").isalnum():
        raise ProgramsError(f"{where}: id must be letters, digits, '-' or '_' (64 at most)")

    keywords = _strings(entry, "keywords", where)
    for keyword in keywords:
        normalized = normalize(keyword)
        if not normalized:
            raise ProgramsError(f"{where}: keyword {keyword!r} has no letters or digits")
        if normalized in RESERVED_WORDS:
            raise ProgramsError(
                f"{where}: keyword {keyword!r} is reserved "
                "(an opt-out, help, start or confirm word)"
            )
    numbers = tuple(
        parse_phone(n) or normalize_sender(n)
        for n in _strings(entry, "numbers", where, required=False)
    )

    hours = entry.get("confirmation_window_hours", 24)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 < hours <= 24 * 30:
        raise ProgramsError(f"{where}: confirmation_window_hours must be between 0 and 720")
    max_segments = entry.get("max_segments", 3)
    if not isinstance(max_segments, int) or not 1 <= max_segments <= 10:
        raise ProgramsError(f"{where}: max_segments must be a whole number from 1 to 10")

    default_language = entry.get("default_language", "en")
    texts_raw = entry.get("texts")
    if not isinstance(texts_raw, dict) or not texts_raw:
        raise ProgramsError(f"{where}: define its texts, e.g. [programs.texts.en]")
    frequency = _string(entry, "frequency", where)
    texts: dict[str, ProgramTexts] = {}
    for language, table in texts_raw.items():
        if language not in LANGUAGES:
            raise ProgramsError(
                f"{where}: texts in unsupported language {language!r} "
                f"(supported: {', '.join(LANGUAGES)})"
            )
        if not isinstance(table, dict):
            raise ProgramsError(f"{where}: texts.{language} is not a table")
        unknown_texts = sorted(set(table) - set(TEXT_NAMES) - {"frequency"})
        if unknown_texts:
            raise ProgramsError(f"{where}: texts.{language}: unknown text(s) {unknown_texts}")
        missing_texts = [name for name in TEXT_NAMES if not str(table.get(name) or "").strip()]
        if missing_texts:
            raise ProgramsError(f"{where}: texts.{language}: missing {', '.join(missing_texts)}")
        values = {name: _string(table, name, f"{where}: texts.{language}") for name in TEXT_NAMES}
        language_frequency = str(table.get("frequency") or frequency)
        texts[language] = ProgramTexts(language=language, frequency=language_frequency, **values)
    if default_language not in texts:
        raise ProgramsError(f"{where}: no texts in its default language {default_language!r}")

    return Program(
        id=program_id,
        brand=_string(entry, "brand", where),
        name=_string(entry, "name", where),
        numbers=numbers,
        keywords=keywords,
        frequency=frequency,
        help_contact=_string(entry, "help_contact", where),
        terms_url=_string(entry, "terms_url", where),
        privacy_url=str(entry["privacy_url"]).strip() if entry.get("privacy_url") else None,
        confirmation_window=timedelta(hours=hours),
        default_language=default_language,
        texts=texts,
        max_segments=max_segments,
    )


def _string(table: dict[str, Any], name: str, where: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ProgramsError(f"{where}: {name} must be a non-empty string")
    return value.strip()


def _strings(
    table: dict[str, Any], name: str, where: str, required: bool = True
) -> tuple[str, ...]:
    value = table.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProgramsError(f"{where}: {name} must be a list of strings")
    if required and not value:
        raise ProgramsError(f"{where}: {name} must not be empty")
    return tuple(v.strip() for v in value)


def _check_keyword_clashes(programs: Iterable[Program], where: str) -> None:
    """Two programs that run on the same number may not share a keyword."""
    programs = list(programs)
    for i, first in enumerate(programs):
        for second in programs[i + 1 :]:
            share_a_number = (
                not first.numbers or not second.numbers or set(first.numbers) & set(second.numbers)
            )
            if not share_a_number:
                continue
            clash = {normalize(k) for k in first.keywords} & {normalize(k) for k in second.keywords}
            if clash:
                raise ProgramsError(
                    f"{where}: programs {first.id} and {second.id} run on the same number and "
                    f"share keyword(s) {', '.join(sorted(clash))}"
                )


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
    """Every carrier-rule violation in one program's texts, as readable sentences."""
    problems: list[str] = []
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


def lint_catalog(catalog: Catalog) -> list[str]:
    """Every carrier-rule violation in the catalog."""
    return [problem for program in catalog.programs for problem in lint_program(program)]
