"""Recipient profiles: where a subscriber is and when they last bought (`RecipientProfile`).

An explicit location (from an import or the API) outranks what Twilio reports with an
inbound text (``FromState``/``FromZip``, the location of the number's rate centre): a
text never overwrites a location someone stated. Within a source, the latest wins.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.send_models import RecipientProfile

IMPORT_SOURCE = "import"
API_SOURCE = "api"
INBOUND_SOURCE = "inbound"
UNSET = object()


def set_profile(
    session: Session,
    subscriber_id: int,
    *,
    source: str,
    now: datetime,
    state: str | None | object = UNSET,
    zip_code: str | None | object = UNSET,
    purchased_on: date | None | object = UNSET,
) -> RecipientProfile:
    """Set the given fields of a subscriber's profile (creating it); others stay as they are.

    The subscriber row should be locked by the caller (`app.ledger.chain.lock_subscriber`).
    """
    profile = session.get(RecipientProfile, subscriber_id, with_for_update=True)
    if profile is None:
        profile = RecipientProfile(subscriber_id=subscriber_id, updated_at=now)
        session.add(profile)
    if state is not UNSET or zip_code is not UNSET:
        if state is not UNSET:
            profile.state = state  # type: ignore[assignment]
        if zip_code is not UNSET:
            profile.zip_code = zip_code  # type: ignore[assignment]
        profile.location_source = source if (profile.state or profile.zip_code) else None
    if purchased_on is not UNSET:
        profile.purchased_on = purchased_on  # type: ignore[assignment]
    profile.updated_at = now
    session.flush()
    return profile


def profiles_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, RecipientProfile]:
    """`{subscriber_id: profile}` for those that have one."""
    ids = list(subscriber_ids)
    if not ids:
        return {}
    rows = session.execute(select(RecipientProfile).where(RecipientProfile.subscriber_id.in_(ids)))
    return {row.subscriber_id: row for row in rows.scalars()}


# One statement, on the webhook's own driver connection: an inbound text's reported location,
# unless someone stated one; nothing is written when it is the one already kept.
_INBOUND_LOCATION = """
INSERT INTO recipient_profiles (subscriber_id, state, zip_code, location_source, updated_at)
SELECT id, {state}, {zip}, 'inbound', {now} FROM subscribers WHERE phone = {phone}
ON CONFLICT (subscriber_id) DO UPDATE
  SET state = excluded.state, zip_code = excluded.zip_code,
      location_source = 'inbound', updated_at = excluded.updated_at
  WHERE (recipient_profiles.location_source IS NULL
         OR recipient_profiles.location_source = 'inbound')
    AND (recipient_profiles.state {differs} excluded.state
         OR recipient_profiles.zip_code {differs} excluded.zip_code)
"""


def record_inbound_location(
    connection, phone: str, state: str | None, zip_code: str | None, now: datetime
) -> None:
    """Keep the location Twilio reported with a text from `phone` (a psycopg or sqlite3
    connection; autocommit on PostgreSQL, committed here on SQLite)."""
    if not (state or zip_code):
        return
    if isinstance(connection, sqlite3.Connection):
        sql = _INBOUND_LOCATION.format(state="?", zip="?", now="?", phone="?", differs="IS NOT")
        moment = now.replace(tzinfo=None).isoformat(" ")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(sql, (state, zip_code, moment, phone))
        connection.execute("COMMIT")
        return
    sql = _INBOUND_LOCATION.format(
        state="%(state)s::varchar",
        zip="%(zip)s::varchar",
        now="%(now)s",
        phone="%(phone)s",
        differs="IS DISTINCT FROM",
    )
    connection.execute(sql, {"state": state, "zip": zip_code, "now": now, "phone": phone})
