"""Where a recipient is: the jurisdictions and time zones a message to a number may land in.

Pure: `phonenumbers` and a small generated table (`data/us_places.tsv`, from
`tools/gen_us_places.py`). In order of trust:

1. a stored location: a US state and/or ZIP code (from an import, the API, or the
   ``FromState``/``FromZip`` fields Twilio sends with an inbound text);
2. otherwise the number itself: phonenumbers' geocoder data names the state of a US
   area code and its time-zone data the zone; the zones that the ZIP codes of that
   area code in that state use are added, because phonenumbers names one zone
   where an area code spans two (850 in Florida is Eastern and Central). The
   geocoder's data is read from the table, reduced to the state each +1 prefix
   names (`geocoded_state`): importing `phonenumbers.geocoder` loads its data for
   every country, some 100-170 MB in each process (web worker or sender);
3. whatever is left ambiguous stays ambiguous: a `Location` lists every possible
   (jurisdiction, zone) pair, and the rules take the most restrictive of them.

A US recipient whose state cannot be told at all is `US` (every state's rules may
apply); a number outside the US is its country's ISO code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import phonenumbers
from phonenumbers import timezone
from phonenumbers.tzdata import TIMEZONE_DATA

# NANP regions where US federal law (the TCPA) applies; the rest of +1 is other countries.
US_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})
UNKNOWN_US = "US"

STATE_NAMES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "florida": "FL", "georgia": "GA",
    "hawaii": "HI", "idaho": "ID", "illinois": "IL", "indiana": "IN", "iowa": "IA",
    "kansas": "KS", "kentucky": "KY", "louisiana": "LA", "maine": "ME", "maryland": "MD",
    "massachusetts": "MA", "michigan": "MI", "minnesota": "MN", "mississippi": "MS",
    "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV", "new hampshire": "NH",
    "new jersey": "NJ", "new mexico": "NM", "new york": "NY", "north carolina": "NC",
    "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR", "pennsylvania": "PA",
    "rhode island": "RI", "south carolina": "SC", "south dakota": "SD", "tennessee": "TN",
    "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA", "washington": "WA",
    "washington state": "WA", "washington d.c.": "DC", "washington dc": "DC",
    "district of columbia": "DC", "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
    "puerto rico": "PR", "guam": "GU", "american samoa": "AS", "northern mariana islands": "MP",
    "u.s. virgin islands": "VI", "us virgin islands": "VI",
}  # fmt: skip

STORED = "stored"
AREA_CODE = "area_code"
COUNTRY = "country"
UNKNOWN = "unknown"


@dataclass(frozen=True, order=True)
class Place:
    """One place a message may land: a jurisdiction ("US-FL", "US", "FR") and an IANA zone."""

    jurisdiction: str
    zone: str

    @property
    def us_state(self) -> str | None:
        """The state code of a US place ("FL"), None for an unknown state or another country."""
        if self.jurisdiction.startswith("US-"):
            return self.jurisdiction[3:]
        return None

    @property
    def in_us(self) -> bool:
        return self.jurisdiction == UNKNOWN_US or self.jurisdiction.startswith("US-")


@dataclass(frozen=True)
class Location:
    """Every place a recipient may be, and how we know (`stored`, `area_code`, `country`...)."""

    places: tuple[Place, ...]
    source: str

    @property
    def ambiguous(self) -> bool:
        return len(self.places) > 1

    @property
    def jurisdiction(self) -> str:
        """One label for the recipient's jurisdiction(s): "US-FL", or "US-FL|US-AL" when unsure."""
        return "|".join(sorted({p.jurisdiction for p in self.places}))


@dataclass(frozen=True)
class _Tables:
    state_zones: dict[str, tuple[str, ...]]
    zip3: dict[str, tuple[tuple[str, str], ...]]
    area_codes: dict[str, tuple[tuple[str, str], ...]]
    geo: dict[str, str | None]  # +1 prefix ("1201") -> the state the geocoder names, or None


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    state_zones: dict[str, tuple[str, ...]] = {}
    zip3: dict[str, tuple[tuple[str, str], ...]] = {}
    area_codes: dict[str, tuple[tuple[str, str], ...]] = {}
    geo: dict[str, str | None] = {}
    text = resources.files("app.core").joinpath("data/us_places.tsv").read_text("utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        kind, key, *values = line.split("\t")
        if kind == "state":
            state_zones[key] = tuple(values)
        elif kind == "geo":
            geo[key] = None if values[0] == "-" else values[0]
        else:
            pairs = tuple(tuple(value.split(":", 1)) for value in values)
            (zip3 if kind == "zip3" else area_codes)[key] = pairs  # type: ignore[assignment]
    return _Tables(state_zones, zip3, area_codes, geo)


def normalize_state(raw: str | None) -> str | None:
    """A two-letter US state code from "fl", "FL" or "Florida"; None when it is not one."""
    if not raw:
        return None
    value = " ".join(raw.strip().split()).lower()
    if len(value) == 2 and value.upper() in _tables().state_zones:
        return value.upper()
    return STATE_NAMES.get(value)


def normalize_zip(raw: str | None) -> str | None:
    """A five-digit US ZIP code ("32501", from "32501-1234" too); None when it is not one."""
    if not raw:
        return None
    digits = raw.strip().split("-", 1)[0]
    return digits if len(digits) == 5 and digits.isascii() and digits.isdigit() else None


def locate(phone: str, state: str | None = None, zip_code: str | None = None) -> Location:
    """Every place a message to `phone` (E.164) may land, best evidence first (module docstring)."""
    stored = _stored_places(normalize_state(state), normalize_zip(zip_code))
    if stored:
        return Location(stored, STORED)
    if phone.startswith("+1") and len(phone) == 12:
        # In the NANP the area code decides the country, the state and the zones: one lookup
        # per area code (a batch of 100,000 numbers has a few hundred). An invalid number is
        # looked up on its own and never stands for its area code.
        known = _BY_AREA_CODE.get(phone[:5])
        if known is None:
            known = _number_location(phone)
            if known.source != UNKNOWN:
                _BY_AREA_CODE[phone[:5]] = known
        return known
    return _number_location(phone)


def _stored_places(state: str | None, zip_code: str | None) -> tuple[Place, ...]:
    tables = _tables()
    if zip_code:
        pairs = tables.zip3.get(zip_code[:3], ())
        if state:
            pairs = tuple(p for p in pairs if p[0] == state) or ()
        if pairs:
            return tuple(sorted({Place(f"US-{s}", z) for s, z in pairs}))
    if state:
        zones = tables.state_zones.get(state, ())
        return tuple(sorted(Place(f"US-{state}", zone) for zone in zones))
    return ()


_BY_AREA_CODE: dict[str, Location] = {}


@lru_cache(maxsize=4096)
def _number_location(phone: str) -> Location:
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return Location((), UNKNOWN)
    region = phonenumbers.region_code_for_number(parsed)
    zones = _zones_of(parsed)
    if region is None:
        # Possible but not a valid number: its country still tells the zones (a sample number's).
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
        example = phonenumbers.example_number(region) if region != "ZZ" else None
        if example is None:
            return Location((), UNKNOWN)
        zones = _zones_of(example)
        if region == "US":
            return Location(tuple(Place(UNKNOWN_US, z) for z in _all_us_zones()), UNKNOWN)
    if region not in US_REGIONS:
        return Location(tuple(sorted(Place(region, zone) for zone in zones)), COUNTRY)
    if region != "US":  # a territory: its own zone, federal rules
        return Location(tuple(sorted(Place(f"US-{region}", z) for z in zones)), AREA_CODE)
    national = phonenumbers.national_significant_number(parsed)
    area_pairs = _tables().area_codes.get(national[:3], ())
    state = geocoded_state(parsed)
    if state:
        found = {Place(f"US-{state}", z) for z in zones}
        found |= {Place(f"US-{s}", z) for s, z in area_pairs if s == state}
        return Location(tuple(sorted(found)), AREA_CODE)
    # A US number whose state cannot be told (toll-free, a new area code): any state, and any
    # US zone it may be in (phonenumbers lists the whole of +1 for a toll-free number).
    us_zones = _all_us_zones()
    candidates = ({z for z in zones if z in us_zones} | {z for _s, z in area_pairs}) or us_zones
    return Location(tuple(sorted(Place(UNKNOWN_US, z) for z in candidates)), UNKNOWN)


def _zones_of(parsed: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    """The zones the number may ring in; for a number whose own prefix says nothing (not a
    valid number, say), every zone of its country: the most restrictive window then applies."""
    zones = tuple(z for z in timezone.time_zones_for_number(parsed) if z != "Etc/Unknown")
    if zones:
        return zones
    country = TIMEZONE_DATA.get(str(parsed.country_code), ())
    return tuple(z for z in country if z != "Etc/Unknown")


@lru_cache(maxsize=1)
def _all_us_zones() -> frozenset[str]:
    """The zones of the 50 states and DC (a territory's numbers have their own region code)."""
    states = set(STATE_NAMES.values()) - US_REGIONS
    return frozenset(
        zone for state, zones in _tables().state_zones.items() if state in states for zone in zones
    )


def geocoded_state(parsed: phonenumbers.PhoneNumber) -> str | None:
    """The state (or territory) in phonenumbers' English geocoder description of a +1 number,
    as `state_from_description(geocoder.description_for_number(parsed, "en"))` gives it, but
    from the generated table rather than the geocoder's data; None for another country code.

    Step by step as the geocoder: nothing for a number of no known type; for a geographical
    one, the longest prefix of its digits in the table; for a non-geographical one (toll-free)
    or a prefix the table lacks, the name of the one region the number is valid in, which
    names a state only for a territory ("Puerto Rico"; not "United States" or "Canada").
    """
    if parsed.country_code != 1:
        return None
    kind = phonenumbers.number_type(parsed)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        return None
    if phonenumbers.is_number_type_geographical(kind, parsed.country_code):
        digits = str(parsed.country_code) + phonenumbers.national_significant_number(parsed)
        geo = _tables().geo
        for end in range(len(digits), 0, -1):
            if digits[:end] in geo:
                return geo[digits[:end]]
    region = phonenumbers.region_code_for_number(parsed)
    if region not in US_REGIONS or region == "US":
        return None
    valid_in = [
        other
        for other in phonenumbers.region_codes_for_country_code(parsed.country_code)
        if phonenumbers.is_valid_number_for_region(parsed, other)
    ]
    return region if valid_in == [region] else None


def state_from_description(description: str) -> str | None:
    """The state in a geocoder description: "San Francisco, CA" or "Florida"."""
    if not description:
        return None
    if ", " in description:
        tail = description.rsplit(", ", 1)[1]
        return normalize_state(tail)
    return normalize_state(description)
