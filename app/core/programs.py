"""The programs file: what each program is called, where it runs, and what it says.

`load_programs()` reads `PROGRAMS_FILE` (TOML) once, when the app is created, and
fails there with a clear message when the file is unusable. `app.core.program_lint`
checks every program against the carrier rules (`flask --app app programs check`).

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
    purpose = "marketing"                # or "informational": which sending rules apply
    frequency_cap = { messages = 4, per = "month" }  # optional; must match `frequency`

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

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from app.config import ConfigError
from app.core.keywords import LANGUAGES, RESERVED_WORDS, normalize
from app.core.phones import normalize_sender, parse_phone
from app.core.sending_rules import CALENDAR_PERIODS, ProgramCap, Purpose

# The FCC's revoke-all rule takes effect on this date unless `REVOKE_ALL_FROM` says otherwise.
DEFAULT_REVOKE_ALL_FROM = date(2027, 1, 31)

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
    "purpose",
    "frequency_cap",
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
    # Declared in the file; `programs check` fails without it. Undeclared is treated as
    # marketing when sending, the purpose with the most rules.
    purpose: Purpose | None = None
    frequency_cap: ProgramCap | None = None

    @property
    def sending_purpose(self) -> Purpose:
        """The purpose the sending rules apply: the declared one, else marketing."""
        return self.purpose or Purpose.MARKETING

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
    # From `REVOKE_ALL_FROM`: from this date an opt-out covers the brand (`app.core.opt_out_scope`).
    revoke_all_from: date = DEFAULT_REVOKE_ALL_FROM
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

    def programs_touched(
        self, number_texted: str | None, also: str | None = None, *, base: list[str] | None = None
    ) -> list[str]:
        """The programs one consent change of a subscriber concerns, in file order.

        The programs on the number they texted (none when it is unknown; `base` instead
        when given), and `also` (the program a keyword named, or the program of the
        message or text in question) when it is not among them. Inbound texts, carrier
        opt-outs and staff decisions all ask this one question; an opt-out's scope rule
        (`app.core.opt_out_scope`) builds on it.
        """
        if base is not None:
            ids = list(base)
        else:
            ids = (
                [p.id for p in self.for_number(number_texted)] if number_texted is not None else []
            )
        if also and also not in ids:
            ids.append(also)
        return ids

    def of_brands(self, brands: Iterable[str]) -> list[Program]:
        """Every program of these brands, in file order."""
        wanted = set(brands)
        return [p for p in self.programs if p.brand in wanted]

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

    purpose = entry.get("purpose")
    if purpose is not None and purpose not in tuple(Purpose):
        raise ProgramsError(f"{where}: purpose must be 'marketing' or 'informational'")
    frequency_cap = _frequency_cap(entry.get("frequency_cap"), where)

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
        purpose=Purpose(purpose) if purpose is not None else None,
        frequency_cap=frequency_cap,
    )


def _frequency_cap(raw: Any, where: str) -> ProgramCap | None:
    """`frequency_cap = { messages = 4, per = "month" }` (per: day, week or month)."""
    if raw is None:
        return None
    problem = f'{where}: frequency_cap must be {{ messages = N, per = "day|week|month" }}'
    if not isinstance(raw, dict) or set(raw) != {"messages", "per"}:
        raise ProgramsError(problem)
    messages, per = raw["messages"], raw["per"]
    if isinstance(messages, bool) or not isinstance(messages, int) or messages < 1:
        raise ProgramsError(problem)
    if per not in CALENDAR_PERIODS:
        raise ProgramsError(problem)
    return ProgramCap(messages, per)


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
