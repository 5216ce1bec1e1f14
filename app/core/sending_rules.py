"""The sending rules: when, how often and for what purpose a number may be texted. Pure data.

Each rule is a frozen record with the jurisdiction it belongs to, the purposes it
governs, its legal citation, a source to read, and the dates it is in force
(by the recipient's local date). `RULESET_VERSION` changes with every edit of the
table and is kept with each decision, so a decision can always be read against
the rules it was made under. `docs/compliance.md` explains each rule, its edges,
and how to add or change one. This is engineering, not legal advice.

What is modelled (marketing messages only; informational ones are not telephone
solicitations):

- quiet hours: the federal window and stricter state windows, in the recipient's
  local time (`QuietHours`);
- frequency caps: at most 3 marketing messages per rolling 24 hours on the same
  subject (`FrequencyCap`); Oregon exempts a recipient who bought within 18 months;
- how long an opt-out must be honoured (`OptOutRetention`, Virginia: 10 years);
- the FCC's revoke-all rule (`REVOKE_ALL`), applied by `app.core.opt_out_scope`;
- replies to a subscriber's own text are never deferred (`REPLY_EXEMPTION`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time, timedelta
from enum import StrEnum

RULESET_VERSION = "2026-12-14.1"


class Purpose(StrEnum):
    """What a program's messages are for, as its programs file declares."""

    MARKETING = "marketing"
    INFORMATIONAL = "informational"


MARKETING_ONLY = frozenset({Purpose.MARKETING})

FEDERAL = "US"
UNKNOWN_STATE = "US"  # a US number whose state we cannot tell: every state's rules may apply


@dataclass(frozen=True)
class DailyWindow:
    """Local wall-clock hours a message may be sent: from `opens` (inclusive) to `closes`."""

    opens: time
    closes: time

    def contains(self, moment: time) -> bool:
        return self.opens <= moment < self.closes

    def label(self) -> str:
        return f"{_clock(self.opens)}–{_clock(self.closes)}"


def _clock(value: time) -> str:
    hour = value.hour % 12 or 12
    suffix = "am" if value.hour < 12 else "pm"
    if value.hour == 12 and value.minute == 0:
        return "noon"
    return f"{hour}{suffix}" if not value.minute else f"{hour}:{value.minute:02d}{suffix}"


def hours(opens: int, closes: int) -> DailyWindow:
    return DailyWindow(time(opens), time(closes))


@dataclass(frozen=True)
class Rule:
    """What every rule carries: an id, its jurisdiction, citation, source and dates in force."""

    id: str
    jurisdiction: str
    citation: str
    source: str
    in_force_from: date | None  # None: in force since before this service existed
    in_force_until: date | None = None
    note: str = ""

    def in_force(self, day: date) -> bool:
        """Is the rule in force on `day` (the recipient's local date)?"""
        if self.in_force_from is not None and day < self.in_force_from:
            return False
        return self.in_force_until is None or day <= self.in_force_until


@dataclass(frozen=True)
class QuietHours(Rule):
    """Messages only inside a window each day (Monday first); None on a day means none at all."""

    weekly: tuple[DailyWindow | None, ...] = ()
    purposes: frozenset[Purpose] = MARKETING_ONLY

    def window_on(self, day: date) -> DailyWindow | None:
        return self.weekly[day.weekday()]

    def summary(self) -> str:
        labels = [w.label() if w else "none" for w in self.weekly]
        if len(set(labels)) == 1:
            return f"{labels[0]} every day"
        if len(set(labels[:6])) == 1:
            return f"{labels[0]} Monday to Saturday, {labels[6]} Sunday"
        return ", ".join(f"{d} {label}" for d, label in zip(WEEKDAYS, labels, strict=True))


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def every_day(window: DailyWindow) -> tuple[DailyWindow, ...]:
    return (window,) * 7


@dataclass(frozen=True)
class FrequencyCap(Rule):
    """At most `limit` messages of a purpose in any rolling `period` on the same subject.

    A "subject" is a program: the messages a program sends are about what its
    disclosure says. `exempt_if_purchase_within` lifts the cap for a recipient who
    bought from the brand that recently (Oregon's established business relationship).
    """

    limit: int = 3
    period: timedelta = timedelta(hours=24)
    purposes: frozenset[Purpose] = MARKETING_ONLY
    exempt_if_purchase_within_months: int | None = None

    def summary(self) -> str:
        text = f"at most {self.limit} per rolling {int(self.period.total_seconds() // 3600)} h"
        if self.exempt_if_purchase_within_months:
            text += (
                f" (not for a recipient who bought within "
                f"{self.exempt_if_purchase_within_months} months)"
            )
        return text


CALENDAR_PERIODS = ("day", "week", "month")


@dataclass(frozen=True)
class ProgramCap:
    """A program's disclosed frequency as a cap: `limit` messages per calendar `period`, counted
    in the recipient's local time ("Up to 4 msgs/mo" is 4 per calendar month)."""

    limit: int
    period: str  # day | week | month

    def summary(self) -> str:
        return f"at most {self.limit} per calendar {self.period}"


@dataclass(frozen=True)
class OptOutRetention(Rule):
    """An opt-out must be honoured (and its record kept) for at least `years`."""

    years: int = 10

    def summary(self) -> str:
        return f"an opt-out is honoured and kept at least {self.years} years"


@dataclass(frozen=True)
class Citation:
    """A rule of conduct that is not a table entry, with its source."""

    id: str
    citation: str
    source: str
    in_force_from: date | None
    summary: str


ECFR_64_1200 = (
    "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200"
)

FEDERAL_WINDOW = QuietHours(
    id="US.quiet_hours",
    jurisdiction=FEDERAL,
    citation=(
        "47 C.F.R. § 64.1200(c)(1) (TCPA); 16 C.F.R. § 310.4(c) (FTC Telemarketing Sales Rule)"
    ),
    source=ECFR_64_1200,
    in_force_from=date(1992, 12, 20),
    weekly=every_day(hours(8, 21)),
    note="No telephone solicitation before 8 a.m. or after 9 p.m. at the called party's location.",
)


def _state_window(
    state: str,
    weekly: tuple[DailyWindow | None, ...],
    citation: str,
    source: str,
    since: date | None,
    note: str = "",
) -> QuietHours:
    return QuietHours(
        id=f"US-{state}.quiet_hours",
        jurisdiction=f"US-{state}",
        citation=citation,
        source=source,
        in_force_from=since,
        weekly=weekly,
        note=note,
    )


EIGHT_TO_EIGHT = every_day(hours(8, 20))
NINE_TO_EIGHT = every_day(hours(9, 20))

STATE_WINDOWS: tuple[QuietHours, ...] = (
    _state_window(
        "FL",
        EIGHT_TO_EIGHT,
        "Fla. Stat. § 501.616(6)(a) (as amended by ch. 2021-174, Laws of Fla., SB 1120)",
        "https://www.flsenate.gov/Laws/Statutes/2024/501.616",
        date(2021, 7, 1),
    ),
    _state_window(
        "OK",
        EIGHT_TO_EIGHT,
        "Okla. Stat. tit. 15, § 775C.4 (Telephone Solicitation Act of 2022, HB 3168)",
        "https://www.oscn.net/applications/oscn/DeliverDocument.asp?CiteID=490745",
        date(2022, 11, 1),
    ),
    _state_window(
        "MD",
        EIGHT_TO_EIGHT,
        "Md. Code Ann., Com. Law §§ 14-4501 to 14-4504 (Stop the Spam Calls Act of 2023, SB 90)",
        "https://mgaleg.maryland.gov/mgawebsite/Legislation/Details/sb0090?ys=2023RS",
        date(2024, 1, 1),
    ),
    _state_window(
        "OR",
        EIGHT_TO_EIGHT,
        "ORS 646.551 to 646.578 as amended by Or. Laws 2025 (HB 3865)",
        "https://olis.oregonlegislature.gov/liz/2025R1/Measures/Overview/HB3865",
        date(2026, 1, 1),
    ),
    _state_window(
        "AL",
        EIGHT_TO_EIGHT,
        "Ala. Admin. Code r. 770-X-5-.17 (Alabama Public Service Commission); Ala. Code § 8-19A",
        "https://psc.alabama.gov/",
        None,
        note="Alabama's rules also bar Sundays and state holidays; not modelled (see docs).",
    ),
    _state_window(
        "LA",
        EIGHT_TO_EIGHT,
        "La. R.S. 45:844.11 et seq. and the Louisiana PSC's Do Not Call rules",
        "https://www.lpsc.louisiana.gov/",
        None,
        note="Louisiana also bars Sundays and holidays; not modelled (see docs).",
    ),
    _state_window(
        "MS",
        EIGHT_TO_EIGHT,
        "Miss. Code Ann. § 77-3-723(1) (Mississippi Telephone Solicitation Act)",
        "https://law.justia.com/codes/mississippi/title-77/chapter-3/article-15/section-77-3-723/",
        None,
        note="The statute states Central Standard Time and bars Sundays; not modelled (see docs).",
    ),
    _state_window(
        "TN",
        EIGHT_TO_EIGHT,
        "Tenn. Code Ann. § 65-4-401 et seq.; Tenn. Comp. R. & Regs. 1220-04-11",
        "https://www.law.cornell.edu/regulations/tennessee/Tenn-Comp-R-Regs-1220-04-11-.02",
        None,
        note="The regulation found reads 8 a.m.-9 p.m.; the stricter 8 p.m. is kept (see docs).",
    ),
    _state_window(
        "WA",
        EIGHT_TO_EIGHT,
        "RCW 19.158.040(2); RCW 80.36.390",
        "https://app.leg.wa.gov/RCW/default.aspx?cite=19.158.040",
        None,
    ),
    _state_window(
        "CT",
        NINE_TO_EIGHT,
        "Conn. Gen. Stat. § 42-288a (as amended by P.A. 23-98, SB 1058)",
        "https://www.cga.ct.gov/current/pub/chap_743m.htm",
        date(2023, 10, 1),
    ),
    _state_window(
        "NV",
        NINE_TO_EIGHT,
        "NRS 228.500 to 228.640 (telecommunication solicitation); NRS 597.814",
        "https://www.leg.state.nv.us/nrs/nrs-228.html",
        None,
        note="NRS 597.814 bars automatic dialing between 9 p.m. and 9 a.m.; see docs.",
    ),
    _state_window(
        "TX",
        (hours(9, 21),) * 6 + (hours(12, 21),),
        "Tex. Bus. & Com. Code § 301.051 (texts included by SB 140, 2025)",
        "https://statutes.capitol.texas.gov/Docs/BC/htm/BC.301.htm",
        date(2025, 9, 1),
    ),
)

_CAP_SOURCES = {
    "FL": (
        "Fla. Stat. § 501.616(6)(b) (ch. 2021-174, Laws of Fla.)",
        "https://www.flsenate.gov/Laws/Statutes/2024/501.616",
        date(2021, 7, 1),
        None,
    ),
    "OK": (
        "Okla. Stat. tit. 15, § 775C.4 (Telephone Solicitation Act of 2022)",
        "https://www.oscn.net/applications/oscn/DeliverDocument.asp?CiteID=490745",
        date(2022, 11, 1),
        None,
    ),
    "MD": (
        "Md. Code Ann., Com. Law §§ 14-4501 to 14-4504 (Stop the Spam Calls Act of 2023)",
        "https://mgaleg.maryland.gov/mgawebsite/Legislation/Details/sb0090?ys=2023RS",
        date(2024, 1, 1),
        None,
    ),
    "OR": (
        "ORS 646.551 to 646.578 as amended by Or. Laws 2025 (HB 3865); established business "
        "relationship: a transaction within the 18 months before the message",
        "https://olis.oregonlegislature.gov/liz/2025R1/Measures/Overview/HB3865",
        date(2026, 1, 1),
        18,
    ),
}

STATE_CAPS: tuple[FrequencyCap, ...] = tuple(
    FrequencyCap(
        id=f"US-{state}.frequency_cap",
        jurisdiction=f"US-{state}",
        citation=citation,
        source=source,
        in_force_from=since,
        exempt_if_purchase_within_months=exempt_months,
    )
    for state, (citation, source, since, exempt_months) in _CAP_SOURCES.items()
)

OPT_OUT_RETENTION: tuple[OptOutRetention, ...] = (
    OptOutRetention(
        id="US-VA.opt_out_retention",
        jurisdiction="US-VA",
        citation="Va. Code § 59.1-514(A) (Virginia Telephone Privacy Protection Act)",
        source="https://law.lis.virginia.gov/vacode/title59.1/chapter44/section59.1-514/",
        in_force_from=None,
        years=10,
        note="Applied to every opt-out: whether a number is in Virginia cannot always be told.",
    ),
)

REVOKE_ALL = Citation(
    id="US.revoke_all",
    citation=(
        "47 C.F.R. § 64.1200(a)(10) (FCC 24-24); effective date deferred to 31 January 2027 by "
        "FCC CGB Order DA 26-12; one confirmation text: 47 C.F.R. § 64.1200(a)(12)"
    ),
    source=ECFR_64_1200,
    in_force_from=date(2027, 1, 31),
    summary=(
        "An opt-out covers every program of the same brand, not only the program texted; the "
        "one confirmation may ask which categories to keep, and all stay revoked until answered."
    ),
)

REPLY_EXEMPTION = Citation(
    id="US.reply_exemption",
    citation=(
        "47 C.F.R. § 64.1200(c)(1) and (f)(15): the windows govern the *initiation* of a "
        "telephone solicitation; 47 C.F.R. § 64.1200(a)(12) and the FCC's SoundBite "
        "Declaratory Ruling (FCC 12-143, 2012): the one opt-out confirmation; CTIA Messaging "
        "Principles and Best Practices § 5 (HELP answered at any time)"
    ),
    source=ECFR_64_1200,
    in_force_from=date(1992, 12, 20),
    summary=(
        "Replies to a subscriber's own text (confirmations, HELP, the one opt-out confirmation) "
        "are answers the subscriber asked for, not solicitations: never deferred or capped."
    ),
)


@dataclass(frozen=True)
class RuleBook:
    """The rules in one place, plus the configured windows for numbers outside the US.

    `country_windows` maps an ISO country code (or ``*``, every other country) to the
    daily window marketing messages keep there (`NON_US_SENDING_WINDOWS`).
    """

    quiet_hours: tuple[QuietHours, ...] = (FEDERAL_WINDOW, *STATE_WINDOWS)
    caps: tuple[FrequencyCap, ...] = STATE_CAPS
    opt_out_retention: tuple[OptOutRetention, ...] = OPT_OUT_RETENTION
    country_windows: dict[str, DailyWindow] = field(default_factory=lambda: {"*": hours(8, 21)})
    version: str = RULESET_VERSION

    def windows_for(self, jurisdiction: str) -> tuple[QuietHours, ...]:
        """The quiet-hours rules of a place: federal plus its state's; every state's if unknown."""
        if jurisdiction == UNKNOWN_STATE:
            return self.quiet_hours
        if jurisdiction.startswith("US-"):
            return tuple(r for r in self.quiet_hours if r.jurisdiction in (FEDERAL, jurisdiction))
        window = self.country_windows.get(jurisdiction) or self.country_windows.get("*")
        if window is None:
            return ()
        return (
            QuietHours(
                id=f"{jurisdiction}.quiet_hours",
                jurisdiction=jurisdiction,
                citation="configured default for this country (NON_US_SENDING_WINDOWS)",
                source="NON_US_SENDING_WINDOWS",
                in_force_from=None,
                weekly=every_day(window),
            ),
        )

    def caps_for(self, jurisdiction: str) -> tuple[FrequencyCap, ...]:
        """The frequency caps of a place; every state's caps when the state is unknown."""
        if jurisdiction == UNKNOWN_STATE:
            return self.caps
        return tuple(c for c in self.caps if c.jurisdiction == jurisdiction)

    def min_opt_out_years(self) -> int:
        """The longest period any rule requires an opt-out to be honoured and kept."""
        return max((r.years for r in self.opt_out_retention), default=0)

    def in_force(self, day: date) -> list[Rule]:
        """Every table rule in force on `day`, for the console's "Sending rules" page."""
        rules: list[Rule] = [*self.quiet_hours, *self.caps, *self.opt_out_retention]
        return [rule for rule in rules if rule.in_force(day)]


def rule_book(settings) -> RuleBook:
    """The rule book with the configured windows for numbers outside the US (`Settings`)."""
    return RuleBook(
        country_windows={
            country: DailyWindow(opens, closes)
            for country, (opens, closes) in settings.non_us_sending_windows.items()
        }
    )
