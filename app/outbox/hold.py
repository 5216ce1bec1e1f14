"""The consent check at send time, held until Twilio has answered.

Only the opt-out confirmation and HELP answers may reach an opted-out number,
nothing reaches an erased or suppressed one, and nothing reaches a number whose
subscription row disagrees with the ledger event it names (`app.ledger.binding`).
A program message (sent through the API) needs an active subscription to its
program, and the sending rules are checked again (`app.outbox.rules_check`): it
may be deferred once more instead of sent.

The check is made once, after the wait for a send slot, and *held* until Twilio
has answered: on PostgreSQL the subscriber row is locked ``FOR SHARE`` in the
same statement (every consent write updates that row, so an opt-out waits), on
SQLite a shared lock on the number (`Database.number_guard`) that every opt-out
path takes exclusively. An opt-out therefore commits either before the check
(the reply is suppressed) or after Twilio accepted the reply, never in between.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Select, String, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.core import flows
from app.core.programs import Catalog
from app.core.send_decisions import NO_CONSENT, OPTED_OUT, PROGRAM_MESSAGE, SUPPRESSED
from app.core.sending_rules import rule_book
from app.ledger.binding import LEDGER_MISMATCH, changed_after, row_agrees
from app.ledger.suppression import history_may_be_texted, phone_hmac
from app.outbox.records import ClaimedMessage
from app.outbox.rules_check import (
    SendTimeRules,
    program_message_held_back,
    refused_at_send_time,
)
from app.store.db import Database, make_engine, utcnow
from app.store.models import (
    ConsentEvent,
    OutboundMessage,
    Subscriber,
    Subscription,
    Suppression,
)


def consent_refusal(
    session: Session,
    message: OutboundMessage | ClaimedMessage,
    suppression_key: bytes | None = None,
    *,
    hold: bool = False,
    rules: SendTimeRules | None = None,
    now: datetime | None = None,
) -> str | None:
    """Why this reply may not go out now, or None when it may.

    Only the opt-out confirmation and HELP reach opted-out numbers. Never to a
    recipient erased since the message was queued (no number left), and never
    to a number on the suppression list unless the message belongs to a history
    the consumer began after the erasure (`app.ledger.suppression`). Never when
    the subscription row disagrees with the ledger event it names
    (`app.ledger.binding`): the row was changed behind the ledger's back.

    With `hold` (PostgreSQL), the same statement locks the subscriber row FOR SHARE
    until the transaction ends, so an opt-out of the number waits for it. A program
    message is refused without `rules`; with them, its answer may be a deferral
    (`app.outbox.rules_check.HeldBack.retry_at`).
    """
    if not message.to_number:
        return "the number was erased"
    digest = phone_hmac(suppression_key, message.to_number) if suppression_key else ""
    program_id = message.program_id
    query = _refusal_query(session.get_bind().dialect.name, hold)
    params = {"subscriber_id": message.subscriber_id, "program_id": program_id, "digest": digest}
    row = session.execute(query, params).one()
    subscriber_created_at, status, erased_at = row[0], row[1], row[2]
    program_message = message.kind == PROGRAM_MESSAGE

    def refused(text: str, reason: str) -> str:
        if program_message:
            return refused_at_send_time(text, reason, rules, program_id)
        return text

    if not history_may_be_texted(subscriber_created_at, erased_at):
        return refused("the number is on the suppression list", SUPPRESSED)
    if program_id is None:
        return None
    if not row_agrees(
        program_id=program_id,
        subscriber_id=message.subscriber_id,
        status=status,
        event_subscriber_id=row[3],
        event_changes=row[4],
        event_program_id=row[5],
        event_status_after=row[6],
        changed_later=bool(row[7]),
    ):
        return refused(LEDGER_MISMATCH, f"{NO_CONSENT}:ledger_mismatch")
    if not flows.reply_allowed(status or flows.NONE, message.kind):
        return refused("the recipient has opted out", OPTED_OUT)
    if program_message:
        if (status or flows.NONE) != flows.ACTIVE:
            return refused(
                f"no active subscription to {program_id}", f"{NO_CONSENT}:{status or flows.NONE}"
            )
        if rules is None:
            return "the sending rules were not checked"
        return program_message_held_back(session, message, status, rules, now or utcnow())
    return None


@functools.lru_cache(maxsize=8)
def _refusal_query(dialect: str, hold: bool) -> Select:
    """The send-time check as one statement, built once per backend (building it costs more
    than running it): the subscription's status and the event that set it, whether a later
    event changed the program, and, when the number is on the suppression list, when it
    was erased. With `hold`, the subscriber row is locked FOR SHARE."""
    program_id = bindparam("program_id", type_=String)
    query = (
        select(
            Subscriber.created_at,
            Subscription.status,
            Suppression.suppressed_at,
            ConsentEvent.subscriber_id,
            ConsentEvent.changes,
            ConsentEvent.program_id,
            ConsentEvent.status_after,
            changed_after(
                Subscriber.id, program_id, ConsentEvent.seq, Subscriber.chain_seq, dialect
            ),
        )
        .outerjoin(
            Subscription,
            (Subscription.subscriber_id == Subscriber.id) & (Subscription.program_id == program_id),
        )
        .outerjoin(ConsentEvent, ConsentEvent.id == Subscription.last_event_id)
        .outerjoin(Suppression, Suppression.phone_hmac == bindparam("digest", type_=String))
        .where(Subscriber.id == bindparam("subscriber_id"))
    )
    return query.with_for_update(read=True, of=Subscriber) if hold else query


class ConsentHold:
    """The send-time consent check of one worker, and the connections its holds use."""

    def __init__(
        self, database: Database, settings: Settings, catalog: Catalog | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        self.rules = (
            SendTimeRules(catalog, rule_book(settings), settings.review_holds_sends)
            if catalog is not None
            else None
        )
        self._sessions: sessionmaker | None = None
        self._lock = threading.Lock()

    @contextmanager
    def held(self, claimed: ClaimedMessage) -> Iterator[str | None]:
        """Why `claimed` may not go out now, or None; opt-outs of its number wait for the block."""
        key = self.settings.suppression_hmac_key
        if self.database.is_postgresql:
            with self._session() as session, session.begin():
                yield consent_refusal(session, claimed, key, hold=True, rules=self.rules)
            return
        with self.database.number_guard(claimed.to_number, exclusive=False):
            with self.database.transaction(write=False) as session:
                refusal = consent_refusal(session, claimed, key, rules=self.rules)
            yield refusal

    def _session(self) -> Session:
        """A session for a consent hold, from a pool of its own (PostgreSQL).

        Each reply in flight holds a connection until Twilio answers, so the holds
        get one connection per sending thread and never starve the claims and
        records that share the app's pool.
        """
        with self._lock:
            if self._sessions is None:
                engine = make_engine(
                    self.database.url, pool_size=self.settings.sender_threads, max_overflow=2
                )
                self._sessions = sessionmaker(engine)
        return self._sessions()

    def close(self) -> None:
        """Close the holds' connections."""
        if self._sessions is not None:
            self._sessions.kw["bind"].dispose()
            self._sessions = None
