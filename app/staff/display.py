"""How the console shows things: times in the reader's zone, codes as plain words, numbers
masked by role. Template filters and helpers, registered on the console's blueprint.

Times are stored in UTC and shown in the staff member's display zone (a setting
on their account page; UTC when unset), always with the zone's name, so a time
read aloud or pasted into an e-mail says which clock it is on.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import g, request
from markupsafe import Markup, escape

from app.core.phones import format_for_reading, mask_digits, mask_for_display
from app.reports import labels
from app.staff import bp, can
from app.store.models import COMPLIANCE


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """Every IANA zone this machine knows, sorted (the account page's choices)."""
    return tuple(sorted(available_timezones()))


def zone_named(name: str | None) -> tzinfo | None:
    """The zone called `name`, or None when unset or unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def display_zone() -> tzinfo:
    """The signed-in staff member's display zone; UTC when they chose none."""
    staff = g.get("staff")
    return zone_named(getattr(staff, "time_zone", None)) or UTC


@bp.app_template_global("display_zone_name")
def display_zone_name() -> str:
    zone = display_zone()
    return "UTC" if zone is UTC else str(zone)


def wants_unmasked() -> bool:
    """Full numbers only for compliance and up, and only when asked for (audited)."""
    return request.args.get("unmask") == "1" and can(COMPLIANCE)


def phone_shown(phone: str | None, unmasked: bool) -> str:
    """A number as this page may show it: in full (E.164) when unmasked, else masked."""
    return (phone or "—") if unmasked else mask_for_display(phone)


@bp.app_template_filter("spaced")
def spaced(phone: str) -> str:
    """An E.164 number grouped for reading aloud: "+1 415 555 0199"."""
    return format_for_reading(phone)


@bp.app_template_filter("text_shown")
def text_shown(text: str | None) -> str | None:
    """A message text, note or reply as the signed-in role may see it: viewers see no digits."""
    return text if can(COMPLIANCE) else mask_digits(text)


@bp.app_template_filter("when")
def format_when(value: datetime | None) -> str:
    """A timestamp in the reader's zone, to the second, with the zone's abbreviation."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(display_zone())
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "UTC")


@bp.app_template_filter("iso_when")
def format_iso(value: str | None) -> str:
    """An ISO 8601 string from an evidence bundle, shown like `when`."""
    if not value:
        return "—"
    return format_when(datetime.fromisoformat(value.replace("Z", "+00:00")))


@bp.app_template_filter("label")
def label_with_code(code: str | None, table: str) -> Markup:
    """Plain words, then the code in small type for whoever needs it."""
    if code is None:
        return Markup("—")
    words = labels.label(code, table)
    if words == str(code):  # the code is already a plain word ("queued")
        return Markup("{}").format(code)
    return Markup('{} <span class="code">{}</span>').format(words, code)


@bp.app_template_filter("words")
def plain_words(code: str | None, table: str) -> str:
    """The plain words alone (option lists, labels for screen readers)."""
    return labels.label(code, table)


@bp.app_template_filter("rule")
def rule_with_code(rule: str | None) -> Markup:
    if not rule:
        return Markup("—")
    return Markup('{} <span class="code">{}</span>').format(labels.rule_label(rule), rule)


@bp.app_template_filter("reason")
def reason_with_code(reason: str | None) -> Markup:
    if not reason:
        return Markup("—")
    return Markup('{} <span class="code">{}</span>').format(labels.reason_label(reason), reason)


@bp.app_template_filter("change")
def change_words(before: str | None, after: str | None = None) -> str:
    return labels.status_change(before, after)


@bp.app_template_global("plural")
def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    return labels.plural(count, singular, plural_form)


@bp.app_template_global("code")
def code(value) -> Markup:
    return Markup('<span class="code">{}</span>').format(escape(value))
