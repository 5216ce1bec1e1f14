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
from datetime import UTC, datetime
from typing import Any

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


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The exact bytes hashed for an event: sorted-key compact JSON of `HASHED_FIELDS`."""
    document: dict[str, Any] = {"v": HASH_VERSION}
    for name in HASHED_FIELDS:
        value = fields.get(name)
        if isinstance(value, datetime):
            value = format_time(value)
        document[name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def event_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 of an event's canonical form."""
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def hashes_equal(a: str | None, b: str | None) -> bool:
    """Compare two hex digests without leaking where they differ."""
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)
