"""What `ledger verify` checks beyond the hashes: the state the chains lead to, and the texts.

Hashes prove that the events are as they were written. They prove nothing about
the tables the service decides from: the `subscriptions` cache, the suppression
list, and the disclosure and reply texts in `ledger_texts` that events name by
SHA-256. All three can be edited behind the triggers (issue 12, findings 2 and
4), so while `app.ledger.chain.verify_ledger` reads every event once, a
`LedgerReplay` sees each one too and afterwards compares:

- **Statuses.** Each chain is replayed by applying its events' recorded
  ``changes`` in order, each change required to start from the status the chain
  had reached (``before``). The final status and the last changing event of
  every program must be exactly the `subscriptions` row's (`status`,
  `last_event_id`); a row without a chain behind it, or a chain without its row,
  fails too. Why the recorded changes and not a fresh decision from each text
  (`app.consent.inbound.decide_text`, which the fault suite uses as its oracle):
  the changes are covered by the event hashes, so once the chain verifies they
  are exactly what was decided; a fresh decision needs the message body, which
  retention and erasure remove, and the programs file as it was then, so it
  would fail on honest ledgers and cannot run on most of a five-year ledger. The
  replay is total, needs nothing but the ledger, and binds the rows to it.
- **The suppression list.** Every erasure event names its suppression entry
  (``hmac-sha256:<digest>`` in its note, covered by its hash): that entry must
  exist, name the number's latest erasure event and its time; every entry must
  be named by an erasure; and an erased subscriber row must hold no number.
- **Texts.** Every `ledger_texts` body must still hash to its address, and
  every text an event references must exist.

A mismatch names the number only by its keyed hash (HMAC-SHA256 under
`SUPPRESSION_KEY`, as the suppression list keeps it), never in clear.
Memory: one dictionary entry per subscription (two integers), plus the few
distinct texts and the erasures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import flows
from app.core.ledger_hashing import text_sha256
from app.ledger.suppression import phone_hmac
from app.store.models import LedgerText, Subscription, Suppression

ERASURE_KIND = "erasure"  # app.privacy.erasure.ERASURE (that module sits above this one)
# How an erasure event's note names its suppression entry (app.privacy.erasure).
SUPPRESSION_NOTE = re.compile(r"hmac-sha256:([0-9a-f]{64})")
_STATUS_CODES = {status: code for code, status in enumerate(flows.STATUSES, start=1)}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_PROGRAM_BITS = 16


class Failure(Protocol):
    """Where a failure is reported (`app.ledger.chain.VerifyResult`)."""

    def fail(self, event_id: int | None, message: str) -> None: ...


def describe_number(phone: str | None, key: bytes | None, subscriber_id: int) -> str:
    """A number as a failure message may name it: by its keyed hash, never in clear."""
    if phone is None:
        return f"subscriber {subscriber_id} (number erased)"
    if key is None:
        return f"subscriber {subscriber_id}"
    return f"number hmac-sha256:{phone_hmac(key, phone)} (subscriber {subscriber_id})"


@dataclass(frozen=True)
class _Erasure:
    subscriber_id: int
    event_id: int
    occurred_at: datetime
    digest: str | None


class LedgerReplay:
    """Replays every chain while `verify_ledger` reads the events; `finish` compares."""

    def __init__(self, suppression_key: bytes | None = None) -> None:
        self.key = suppression_key
        self._program_index: dict[str, int] = {}
        self._programs: list[str] = []
        # (subscriber_id << 16 | program index) -> (last changing event id << 3 | status code)
        self._state: dict[int, int] = {}
        self._texts: dict[str, tuple[int, str]] = {}  # sha256 -> (first event id, "disclosure")
        self._erasures: list[_Erasure] = []

    def _key(self, subscriber_id: int, program_id: str) -> int:
        index = self._program_index.get(program_id)
        if index is None:
            index = self._program_index[program_id] = len(self._programs)
            self._programs.append(program_id)
        return subscriber_id << _PROGRAM_BITS | index

    def observe(self, event: Any) -> str | None:
        """Apply one event (read in chain order); a failure message when its changes don't fit."""
        for change in event.changes or ():
            program_id, before, after = (
                change.get("program"),
                change.get("before"),
                change.get("after"),
            )
            if after not in _STATUS_CODES or not isinstance(program_id, str):
                return f"event {event.id}: records a change it cannot mean ({change!r})"
            key = self._key(event.subscriber_id, program_id)
            current = self._state.get(key)
            reached = _STATUSES[current & 7] if current is not None else flows.NONE
            if before != reached:
                return (
                    f"event {event.id}: records program {program_id} going from {before}, "
                    f"but its chain had reached {reached}"
                )
            self._state[key] = event.id << 3 | _STATUS_CODES[after]
        for sha, role in ((event.disclosure_sha256, "disclosure"), (event.reply_sha256, "reply")):
            if sha and sha not in self._texts:
                self._texts[sha] = (event.id, role)
        if event.kind == ERASURE_KIND:
            named = SUPPRESSION_NOTE.findall(event.note or "")
            self._erasures.append(
                _Erasure(
                    event.subscriber_id, event.id, event.occurred_at, named[-1] if named else None
                )
            )
        return None

    def finish(
        self,
        session: Session,
        phones: Mapping[int, str | None],
        result: Failure,
        *,
        batch_size: int = 5000,
    ) -> None:
        """Compare the replay with the subscriptions, the suppression list and the texts."""
        checks: list[Callable[[], str | None]] = [
            lambda: self._check_subscriptions(session, phones, batch_size),
            lambda: self._check_suppressions(session, phones),
            lambda: check_texts(session, self._texts),
        ]
        for check in checks:
            message = check()
            if message:
                result.fail(None, message)
                return

    def _name(self, phones: Mapping[int, str | None], subscriber_id: int) -> str:
        return describe_number(phones.get(subscriber_id), self.key, subscriber_id)

    def _check_subscriptions(
        self, session: Session, phones: Mapping[int, str | None], batch_size: int
    ) -> str | None:
        state = dict(self._state)
        rows = session.execute(
            select(
                Subscription.subscriber_id,
                Subscription.program_id,
                Subscription.status,
                Subscription.last_event_id,
            ).execution_options(yield_per=batch_size)
        )
        for subscriber_id, program_id, status, last_event_id in rows:
            replayed = state.pop(self._key(subscriber_id, program_id), None)
            who = self._name(phones, subscriber_id)
            if replayed is None:
                return (
                    f"{who}: its subscription to {program_id} says {status}, but its chain "
                    "records no change of that program (the row was written behind the ledger)"
                )
            chain_status, chain_event = _STATUSES[replayed & 7], replayed >> 3
            if status != chain_status:
                return (
                    f"{who}: its subscription to {program_id} says {status}, but its chain "
                    f"ends at {chain_status} (event {chain_event}): the row was changed behind "
                    "the ledger"
                )
            if last_event_id != chain_event:
                return (
                    f"{who}: its subscription to {program_id} names event {last_event_id}, but "
                    f"event {chain_event} last changed it"
                )
        for key, replayed in sorted(state.items()):
            subscriber_id, index = key >> _PROGRAM_BITS, key & ((1 << _PROGRAM_BITS) - 1)
            return (
                f"{self._name(phones, subscriber_id)}: its chain leaves {self._programs[index]} at "
                f"{_STATUSES[replayed & 7]} (event {replayed >> 3}), but it has no subscription "
                "row (the row was deleted)"
            )
        return None

    def _check_suppressions(self, session: Session, phones: Mapping[int, str | None]) -> str | None:
        latest: dict[str, _Erasure] = {}
        for erasure in self._erasures:
            if erasure.digest is None:
                return f"event {erasure.event_id}: an erasure that names no suppression entry"
            if phones.get(erasure.subscriber_id) is not None:
                return (
                    f"subscriber {erasure.subscriber_id}: erased by event {erasure.event_id}, but "
                    "its row holds a number again"
                )
            latest[erasure.digest] = erasure  # read in id order: the last one wins
        entries = {
            row.phone_hmac: row
            for row in session.execute(
                select(Suppression.phone_hmac, Suppression.suppressed_at, Suppression.event_id)
            )
        }
        for digest, erasure in sorted(latest.items()):
            entry = entries.pop(digest, None)
            if entry is None:
                return (
                    f"number hmac-sha256:{digest}: erased by event {erasure.event_id}, but missing "
                    "from the suppression list (it could be texted or imported again)"
                )
            if entry.event_id != erasure.event_id or entry.suppressed_at != erasure.occurred_at:
                return (
                    f"number hmac-sha256:{digest}: its suppression entry names event "
                    f"{entry.event_id}, but the latest erasure is event {erasure.event_id} "
                    "(the entry was changed)"
                )
        for digest in sorted(entries):
            return (
                f"number hmac-sha256:{digest}: on the suppression list without an erasure in "
                "the ledger"
            )
        return None


def check_texts(session: Session, referenced: Mapping[str, tuple[int, str]]) -> str | None:
    """Every stored text must hash to its address; every referenced one must exist."""
    seen: set[str] = set()
    for sha, body in session.execute(select(LedgerText.sha256, LedgerText.body)):
        seen.add(sha)
        if text_sha256(body) != sha:
            event_id, role = referenced.get(sha, (None, "text"))
            where = f"the {role} of event {event_id}" if event_id is not None else "unreferenced"
            return (
                f"ledger text {sha}: its content no longer hashes to its address ({where}); "
                "it was edited"
            )
    for sha, (event_id, role) in sorted(referenced.items(), key=lambda item: item[1][0]):
        if sha not in seen:
            return f"event {event_id}: its {role} text {sha} is missing"
    return None


def texts_edited(texts: Mapping[str, str | None]) -> list[str]:
    """The addresses among `texts` ({sha256: body or None}) whose body is missing or edited."""
    return sorted(sha for sha, body in texts.items() if body is None or text_sha256(body) != sha)


def replay_chain(events: Iterable[Any]) -> tuple[dict[str, tuple[str, int]], str | None]:
    """One chain (events in order) replayed: {program: (status, last changing event)}, failure."""
    replay = LedgerReplay()
    for event in events:
        problem = replay.observe(event)
        if problem:
            return {}, problem
    programs = {}
    for key, value in replay._state.items():
        programs[replay._programs[key & ((1 << _PROGRAM_BITS) - 1)]] = (
            _STATUSES[value & 7],
            value >> 3,
        )
    return programs, None


def chain_disagreement(
    events: Sequence[Any], subscriptions: Iterable[Any], name: str
) -> str | None:
    """The first way one number's subscription rows disagree with its chain, or None."""
    programs, problem = replay_chain(events)
    if problem:
        return problem
    for row in subscriptions:
        replayed = programs.pop(row.program_id, None)
        if replayed is None or replayed != (row.status, row.last_event_id):
            chain = f"{replayed[0]} (event {replayed[1]})" if replayed else "no change"
            return (
                f"{name}: its subscription to {row.program_id} says {row.status} (event "
                f"{row.last_event_id}), but its chain records {chain}: the row was changed "
                "behind the ledger"
            )
    for program_id, (status, event_id) in sorted(programs.items()):
        return (
            f"{name}: its chain leaves {program_id} at {status} (event {event_id}), but it has no "
            "subscription row"
        )
    return None
