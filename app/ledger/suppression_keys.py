"""The key of the suppression list's hashes: kept wrapped under SUPPRESSION_KEY, checked at start.

The suppression list keeps only keyed hashes of erased numbers; the numbers are
gone, so the hashes can never be computed again under another key. The key
they are made with (the *data key*) therefore never changes. It is stored in
`key_records`, wrapped (AES-256-GCM) under a key derived from
`SUPPRESSION_KEY`, beside `SUPPRESSION_KEY`'s fingerprint:

- A start whose `SUPPRESSION_KEY` does not open the record is refused
  (`SuppressionKeyError`): before, a changed key silently emptied the list,
  and an erased number could be imported and texted again.
- Re-keying (`flask --app app suppression rekey`, with the new key in
  `SUPPRESSION_KEY` and the old one in `SUPPRESSION_KEY_PREVIOUS`) rewraps the
  data key under the new one and records its fingerprint: every hash keeps
  matching, and the old key no longer opens anything in the database.
- A new database gets a random data key. A database with suppression entries
  or imported rows from before this record adopts the key they were made with
  (`adopt`): `SUPPRESSION_KEY` itself, or, where it was never set, the key
  once derived from `SECRET_KEY`.

The keyed-hash users (erasure, imports, consent checks, the sender, the audit
log) read the data key through `Settings.suppression_hmac_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.config import ConfigError
from app.ledger.chain import insert_ignoring_conflicts
from app.store.db import Database, utcnow
from app.store.models import ImportedRow, KeyRecord, Suppression

RECORD_NAME = "suppression"
_WRAP_INFO = b"sms-consent-gateway suppression key wrap"
_WRAP_AAD = b"suppression data key"

logger = logging.getLogger(__name__)


class SuppressionKeyError(ConfigError):
    """SUPPRESSION_KEY does not open the recorded data key, or none has been adopted yet."""


def wrapping_key(suppression_key: str) -> bytes:
    """The AES-256 key derived from the operator's SUPPRESSION_KEY (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO).derive(
        suppression_key.encode("utf-8")
    )


def fingerprint(suppression_key: str) -> str:
    """A public fingerprint of SUPPRESSION_KEY: recognises the key, reveals nothing of it."""
    return hmac.new(wrapping_key(suppression_key), b"fingerprint", hashlib.sha256).hexdigest()


def wrap(suppression_key: str, data_key: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(wrapping_key(suppression_key)).encrypt(nonce, data_key, _WRAP_AAD)
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap(suppression_key: str, wrapped: str) -> bytes:
    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(wrapping_key(suppression_key)).decrypt(raw[:12], raw[12:], _WRAP_AAD)
    except InvalidTag as exc:
        raise SuppressionKeyError("SUPPRESSION_KEY does not open the recorded key") from exc


def legacy_key_from_secret(secret_key: str) -> bytes:
    """The key once derived from SECRET_KEY when SUPPRESSION_KEY was not set (before 0008)."""
    return hmac.new(
        secret_key.encode("utf-8"), b"sms-consent-gateway suppression key", "sha256"
    ).digest()


def keyed_rows(session: Session) -> int:
    """How many rows hold hashes made with the data key (suppressions, imported rows)."""
    return session.execute(select(func.count()).select_from(Suppression)).scalar_one() + (
        session.execute(select(func.count()).select_from(ImportedRow)).scalar_one()
    )


def record(session: Session, suppression_key: str, data_key: bytes, now: datetime) -> KeyRecord:
    """Store `data_key` wrapped under `suppression_key` (replacing any earlier record)."""
    row = session.get(KeyRecord, RECORD_NAME, with_for_update=True)
    if row is None:
        row = KeyRecord(name=RECORD_NAME, created_at=now)
        session.add(row)
    row.fingerprint = fingerprint(suppression_key)
    row.wrapped_key = wrap(suppression_key, data_key)
    row.updated_at = now
    session.flush()
    return row


def open_record(session: Session, key: str, previous: str | None, *, create: bool) -> bytes:
    """The data key, opened with `key` or (during a re-key) `previous`.

    With no record yet: a new random data key when nothing was hashed before
    (and `create`); otherwise `SuppressionKeyError` asking for `adopt`.
    """
    row = session.get(KeyRecord, RECORD_NAME)
    if row is None:
        existing = keyed_rows(session)
        if existing:
            raise SuppressionKeyError(
                f"the suppression list and import fingerprints hold {existing} hash(es) made "
                "before their key was recorded: run `flask --app app suppression adopt` "
                "(they were made with SUPPRESSION_KEY) or `flask --app app suppression adopt "
                "--from-secret-key` (SUPPRESSION_KEY was never set; SECRET_KEY as it was then)"
            )
        if not create:
            raise SuppressionKeyError("no suppression key is recorded yet")
        return open_record_after_insert(session, key)
    for candidate in (key, previous):
        if candidate and hmac.compare_digest(row.fingerprint, fingerprint(candidate)):
            return unwrap(candidate, row.wrapped_key)
    raise SuppressionKeyError(
        "SUPPRESSION_KEY is not the key the suppression list was recorded with (fingerprint "
        f"{row.fingerprint[:12]}…, this key's {fingerprint(key)[:12]}…). With a wrong key every "
        "erased number would look new and could be texted again, so the service does not "
        "start. Set the right SUPPRESSION_KEY, or re-key: the new key in SUPPRESSION_KEY, the "
        "old in SUPPRESSION_KEY_PREVIOUS, then `flask --app app suppression rekey`"
    )


def open_record_after_insert(session: Session, key: str) -> bytes:
    """Record a random data key; when another process recorded one first, open theirs."""
    now = utcnow()
    insert_ignoring_conflicts(
        session,
        KeyRecord,
        {
            "name": RECORD_NAME,
            "fingerprint": fingerprint(key),
            "wrapped_key": wrap(key, os.urandom(32)),
            "created_at": now,
            "updated_at": now,
        },
        ["name"],
    )
    row = session.get(KeyRecord, RECORD_NAME, populate_existing=True)
    if not hmac.compare_digest(row.fingerprint, fingerprint(key)):
        raise SuppressionKeyError("another process recorded a different SUPPRESSION_KEY")
    return unwrap(key, row.wrapped_key)


class SuppressionKeyring:
    """The data key for this process: opened at start, or on first use if the database was away.

    `Settings.suppression_hmac_key` calls `data_key()`; the answer is cached.
    """

    def __init__(self, database: Database, key: str, previous: str | None = None) -> None:
        self.database = database
        self.key = key
        self.previous = previous or None
        self._data_key: bytes | None = None
        self._lock = threading.Lock()

    def data_key(self) -> bytes:
        if self._data_key is None:
            with self._lock:
                if self._data_key is None:
                    with self.database.transaction() as session:
                        self._data_key = open_record(session, self.key, self.previous, create=True)
        return self._data_key

    def check_at_start(self) -> None:
        """Open the record now; a wrong key raises. A database that is away (or not yet
        migrated) is no reason to stop: the key is then opened on first use."""
        try:
            self.data_key()
        except DBAPIError as error:  # unreachable, or no key_records table before `db upgrade`
            logger.warning("suppression key not checked at start: %s", type(error).__name__)
