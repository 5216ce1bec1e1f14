"""How consent ledger events are hashed. Pure: no Flask, no database.

An event's hash covers every field that is not personal data, plus salted
commitments to the personal fields (the phone number and the message body).
Retention and erasure may remove the personal fields and the salt; the
commitments, and so the chain of hashes, stay intact and verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What made a ledger event; every kind changes consent through `app.consent.service`."""

    INBOUND_TEXT = "inbound_text"  # a subscriber's own text
    CARRIER_OPT_OUT = "carrier_opt_out"  # Twilio error 21610: the carrier blocks our texts
    STAFF_DECISION = "staff_decision"  # a decision on a text flagged as a possible opt-out
    IMPORT = "import"  # consent evidence imported from another system
    ERASURE = "erasure"  # the number erased at its owner's request


GENESIS_HASH = "0" * 64
HASH_VERSION = 1

# The fields, in the order they are documented, that `event_hash` covers.
HASHED_FIELDS = (
    "subscriber_id",
    "seq",
    "prev_hash",
    "witness_id",
    "witness_hash",
    "kind",
    "occurred_at",
    "message_sid",
    "account_sid",
    "to_number",
    "intent",
    "rule",
    "language",
    "program_id",
    "status_before",
    "status_after",
    "changes",
    "possible_opt_out",
    "disclosure_sha256",
    "reply_sha256",
    "actor",
    "note",
    "subject_event_id",
    "phone_commitment",
    "body_commitment",
)


def new_salt() -> str:
    """A fresh per-event salt; without it, a commitment to a phone number could be brute-forced."""
    return secrets.token_hex(16)


def commitment(label: str, salt: str, value: bytes) -> str:
    """A salted SHA-256 commitment to one personal field."""
    digest = hashlib.sha256()
    digest.update(label.encode("ascii") + b"\x00" + salt.encode("ascii") + b"\x00")
    digest.update(value)
    return digest.hexdigest()


def phone_commitment(salt: str, phone: str) -> str:
    return commitment("phone", salt, phone.encode("utf-8"))


def body_commitment(salt: str, body_bytes: bytes) -> str:
    return commitment("body", salt, body_bytes)


def text_sha256(text: str) -> str:
    """The content address of a disclosure or reply text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_time(value: datetime) -> str:
    """A timestamp as hashed: UTC, microseconds, 'Z'. Database round trips keep microseconds."""
    if value.tzinfo is None:
        raise ValueError("ledger timestamps must carry a time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode_time(value: Any) -> str:
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"{type(value).__name__} cannot be hashed into a ledger event")


# Sorted keys, no spaces, UTF-8 as is; timestamps through `format_time`.
_CANONICAL_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode_time
)


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The exact bytes hashed for an event: sorted-key compact JSON of `HASHED_FIELDS`."""
    document = {name: fields.get(name) for name in HASHED_FIELDS}
    document["v"] = HASH_VERSION
    return _CANONICAL_JSON.encode(document).encode("utf-8")


def event_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 of an event's canonical form."""
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def hashes_equal(a: str | None, b: str | None) -> bool:
    """Compare two hex digests without leaking where they differ."""
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


@dataclass
class NewEvent:
    """The fields of an event to append; sealing fills in chain, witness and hashes."""

    kind: str
    occurred_at: datetime
    intent: str
    message_sid: str | None = None
    account_sid: str | None = None
    to_number: str | None = None
    rule: str | None = None
    language: str | None = None
    program_id: str | None = None
    status_before: str | None = None
    status_after: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    possible_opt_out: bool = False
    disclosure_sha256: str | None = None
    reply_sha256: str | None = None
    actor: str | None = None
    note: str | None = None
    subject_event_id: int | None = None
    body: str | None = None
    body_raw: bytes | None = None


@dataclass(frozen=True)
class SealedEvent:
    """An event ready to insert: its hashed fields, its hash, and its personal data."""

    fields: dict[str, Any]
    event_hash: str
    body: str | None
    body_raw: bytes | None
    personal_salt: str

    def row(self) -> dict[str, Any]:
        """Every column of the `consent_events` row, but the id."""
        return {
            **self.fields,
            "event_hash": self.event_hash,
            "body": self.body,
            "body_raw": self.body_raw,
            "personal_salt": self.personal_salt,
        }


def body_bytes(body: str | None, body_raw: bytes | None) -> bytes | None:
    """The bytes a body commitment covers: the raw bytes when kept, else the UTF-8 text."""
    if body_raw is not None:
        return body_raw
    return None if body is None else body.encode("utf-8")


def seal_event(
    new: NewEvent,
    *,
    subscriber_id: int,
    phone: str | None,
    chain_seq: int,
    chain_head_hash: str | None,
    witness: tuple[int, str] | None,
    salt: str | None = None,
) -> SealedEvent:
    """Link `new` to its subscriber's chain and to the ledger's newest event, and hash it.

    `chain_seq`/`chain_head_hash` are the subscriber's chain head before this
    event; `witness` is (id, hash) of the newest event in the whole ledger.
    """
    salt = salt or new_salt()
    raw = body_bytes(new.body, new.body_raw)
    fields: dict[str, Any] = {
        "subscriber_id": subscriber_id,
        "seq": chain_seq + 1,
        "prev_hash": chain_head_hash or GENESIS_HASH,
        "witness_id": witness[0] if witness else None,
        "witness_hash": witness[1] if witness else None,
        "kind": new.kind,
        "occurred_at": new.occurred_at,
        "message_sid": new.message_sid,
        "account_sid": new.account_sid,
        "to_number": new.to_number,
        "intent": new.intent,
        "rule": new.rule,
        "language": new.language,
        "program_id": new.program_id,
        "status_before": new.status_before,
        "status_after": new.status_after,
        "changes": list(new.changes),
        "possible_opt_out": new.possible_opt_out,
        "disclosure_sha256": new.disclosure_sha256,
        "reply_sha256": new.reply_sha256,
        "actor": new.actor,
        "note": new.note,
        "subject_event_id": new.subject_event_id,
        "phone_commitment": phone_commitment(salt, phone or ""),
        "body_commitment": None if raw is None else body_commitment(salt, raw),
    }
    return SealedEvent(fields, event_hash(fields), new.body, new.body_raw, salt)
