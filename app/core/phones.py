"""Phone number normalisation with `phonenumbers`. Pure: no Flask, no database."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers


@lru_cache(maxsize=65536)  # numbers text us again and again; parsing one costs ~50 µs
def normalize_sender(raw: str) -> str:
    """The sender as we key it: E.164 for phone numbers, verbatim for short codes and names.

    Twilio sends long codes in E.164 already; short codes ("12345") and
    alphanumeric sender ids ("ACME") are kept exactly as received.
    """
    value = raw.strip()
    if not value:
        return value
    digits = value[1:] if value.startswith("+") else value
    if not digits.isdigit() or (not value.startswith("+") and len(digits) <= 8):
        return value
    parsed = _parse(value if value.startswith("+") else "+" + digits)
    if parsed is None:
        return value
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_phone(text: str) -> str | None:
    """A phone number typed by a person or another system, as E.164; None if it isn't one.

    Accepts E.164 with or without '+', and common punctuation ("+1 (415) 555-0100").
    Short codes (up to 8 digits) are returned as digits.
    """
    cleaned = "".join(ch for ch in text.strip() if ch.isdigit() or ch == "+")
    if not cleaned or cleaned.count("+") > 1 or ("+" in cleaned and not cleaned.startswith("+")):
        return None
    digits = cleaned.lstrip("+")
    if not digits:
        return None
    if not cleaned.startswith("+") and len(digits) <= 8:
        return digits
    parsed = _parse("+" + digits)
    if parsed is None:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(phone: str | None) -> str:
    """A number safe for INFO logs: country code and the last two digits only."""
    if not phone:
        return "-"
    if not phone.startswith("+"):
        return phone[:1] + "…" if len(phone) > 2 else "…"
    return phone[:2] + "…" + phone[-2:]


def _parse(value: str) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_possible_number(parsed) else None


MASK = "••••"


def mask_for_display(phone: str | None) -> str:
    """A number for staff who may not see it in full: "+1 •••• 00".

    The country code and at most the last two digits stay, so a masked number
    cannot be told apart from 1 in 100 others of its country, and no lookup can
    unmask it a digit at a time. A short code or sender name keeps its first and
    last character.
    """
    if not phone:
        return "—"
    parsed = _parse(phone) if phone.startswith("+") else None
    if parsed is not None:
        national = phonenumbers.national_significant_number(parsed)
        return f"+{parsed.country_code} {MASK} {national[-2:]}"
    if len(phone) <= 2:
        return MASK
    return f"{phone[0]}{MASK}{phone[-1]}"


def mask_digits(text: str | None) -> str | None:
    """`text` with every run of digits replaced by "•••" (for staff who may not see numbers).

    A number written inside a message ("call me on 415 555 0123") must not show
    where the number itself is masked.
    """
    if text is None:
        return None
    out: list[str] = []
    in_run = False
    for char in text:
        if char.isdigit():
            if not in_run:
                out.append(MASK[:3])
            in_run = True
        else:
            out.append(char)
            in_run = False
    return "".join(out)


def contains_phone_number(text: str, own_phone: str | None = None, region: str = "US") -> bool:
    """Does free text hold a phone number? For text kept where erasure cannot reach it.

    True for anything `phonenumbers` recognises as a possible number in `region`
    or in international form (dates and ticket references are not), and for the
    national digits of `own_phone` however they are written inside the text.
    """
    if own_phone:
        digits = "".join(ch for ch in text if ch.isdigit())
        own = _national_digits(own_phone)
        if own and own in digits:
            return True
    matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE)
    return matcher.has_next()


def _national_digits(phone: str) -> str | None:
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return None


def phone_candidates(text: str, default_region: str = "US") -> list[str]:
    """Every number a person may mean by `text`, for searching ("415 555 0100" is ambiguous).

    The international reading ("+" and the digits) comes first; a national
    reading in `default_region` is added when it is a valid number there. A
    short code or sender name is kept as typed.
    """
    if any(char.isalpha() for char in text):
        # A sender name ("ACME2", or anything else a sender id may say) is searched as typed;
        # reading its digits as a short code would find another sender.
        return [normalize_sender(text)]
    candidates: list[str] = []
    international = parse_phone(text)
    if international:
        candidates.append(international)
    if not text.strip().startswith("+"):
        try:
            parsed = phonenumbers.parse(text, default_region)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_valid_number(parsed):
            national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            if national not in candidates:
                candidates.append(national)
    return candidates or [normalize_sender(text)]


@dataclass(frozen=True)
class NumberReading:
    """One way of reading what a person typed as a number, and how it was read.

    `how`: "international" (typed with +), "international without +" (country code
    first, no +), "international prefix" (00 / 011 and a country code, as dialled in
    `region`), "national" (a number of `region`: PHONE_DEFAULT_REGION), or "short
    code" (up to 8 digits, kept as typed).
    """

    e164: str
    how: str
    region: str | None = None


def number_readings(text: str, default_region: str = "US") -> list[NumberReading]:
    """Every number `text` may mean, with how each was read; empty when it is not a number.

    The same readings as `phone_candidates` (the event log's search), with their
    provenance, so the console can say "read as a national number in US".
    """
    typed = text.strip()
    digits = "".join(ch for ch in typed if ch.isdigit())
    if not digits or any(ch.isalpha() for ch in typed):
        return []
    readings: list[NumberReading] = []
    first = parse_phone(typed)
    if first is not None:
        if first.startswith("+"):
            how = "international" if typed.startswith("+") else "international without +"
        else:
            how = "short code"
        readings.append(NumberReading(first, how))
    if not typed.startswith("+"):
        try:
            parsed = phonenumbers.parse(typed, default_region, keep_raw_input=True)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_valid_number(parsed):
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            source = parsed.country_code_source
            how = (
                "international prefix"
                if source == phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD
                else "national"
            )
            if all(r.e164 != e164 for r in readings):
                readings.append(NumberReading(e164, how, default_region))
    return readings


def format_for_reading(phone: str) -> str:
    """An E.164 number grouped for people: "+1 415 555 0199"; anything else as it is."""
    parsed = _parse(phone) if phone.startswith("+") else None
    if parsed is None:
        return phone
    spaced = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return spaced.replace("-", " ")
