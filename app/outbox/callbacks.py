"""Twilio's status callbacks for the replies we sent: keep each, move the message forward.

The web tier (`app.web.webhooks`) calls `record_status_callback`; it never
imports the worker. A callback reporting error 21610 (the recipient opted out
at the carrier) is a consent change, made under the number's lock.
"""

from __future__ import annotations

import logging

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.consent.service import run_locked
from app.core.programs import Catalog
from app.outbox.records import apply_receipt, carrier_opt_out, record_sent
from app.outbox.twilio_gateway import ERROR_UNSUBSCRIBED, SendReceipt
from app.store.db import Database, utcnow
from app.store.errors import translate_errors
from app.store.models import DeliveryReceipt, OutboundMessage

logger = logging.getLogger(__name__)


def record_status_callback(
    database: Database,
    catalog: Catalog,
    *,
    message_sid: str,
    status: str,
    error_code: int | None,
    outbound_id: int | None = None,
) -> OutboundMessage | None:
    """Record one status callback in a transaction of its own; commits.

    Database errors leave as `app.store.errors` exceptions.

    A carrier opt-out (21610) holds the recipient's lock, so it waits for a reply in
    flight to the number like every other opt-out.
    """
    with translate_errors():
        phone = None
        if error_code == ERROR_UNSUBSCRIBED:
            with database.transaction(write=False) as session:
                phone = recipient_of(session, message_sid, outbound_id)
        return run_locked(
            database,
            phone,
            lambda session: record_delivery_status(
                session,
                message_sid=message_sid,
                status=status,
                error_code=error_code,
                catalog=catalog,
                outbound_id=outbound_id,
            ),
        )


def record_delivery_status(
    session: Session,
    *,
    message_sid: str,
    status: str,
    error_code: int | None,
    catalog: Catalog | None = None,
    outbound_id: int | None = None,
) -> OutboundMessage | None:
    """Keep a status callback and move its message forward (never back).

    The receipt is kept even when no message has this SID yet: the callback can
    beat the worker's own commit, and `record_sent` applies it then. When the
    callback names its outbox row (`outbound_id`, from the signed callback URL)
    and that row has no SID yet, the SID is attached to it: Twilio accepted the
    message even if the worker never lived to record it, and it must not be sent
    again.
    """
    now = utcnow()
    session.add(
        DeliveryReceipt(
            message_sid=message_sid, status=status, error_code=error_code, received_at=now
        )
    )
    message = session.execute(
        select(OutboundMessage).where(OutboundMessage.twilio_sid == message_sid).with_for_update()
    ).scalar_one_or_none()
    if message is None and outbound_id is not None:
        message = session.get(OutboundMessage, outbound_id, with_for_update=True)
        if message is None:
            return None
        if message.twilio_sid is not None and message.twilio_sid != message_sid:
            logger.warning(
                "status callback for a second copy of a message",
                extra={"outbound_id": message.id, "message_sid": message_sid},
            )
            return None
        if message.twilio_sid is None:  # else a concurrent callback attached it just now
            logger.info(
                "status callback names a send we never recorded; SID attached",
                extra={"outbound_id": message.id, "message_sid": message_sid},
            )
            session.flush()  # the receipt above is applied with the others
            record_sent(session, message.id, SendReceipt(sid=message_sid, status=status), now)
    if message is None:
        return None
    apply_receipt(message, status, error_code)
    if error_code == ERROR_UNSUBSCRIBED and catalog is not None:
        carrier_opt_out(session, catalog, message, error_code, now)
    return message


def recipient_of(session: Session, message_sid: str, outbound_id: int | None) -> str:
    """The number a reply went to, by its SID or its outbox id ("" when unknown)."""
    condition = OutboundMessage.twilio_sid == message_sid
    if outbound_id is not None:
        condition = or_(condition, OutboundMessage.id == outbound_id)
    phone = session.execute(select(OutboundMessage.to_number).where(condition).limit(1)).scalar()
    return phone or ""
