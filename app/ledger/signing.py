"""The Ed25519 key that signs ledger checkpoints: read from `LEDGER_SIGNING_KEY`, never stored
in the database.

Whoever can rewrite the database must not be able to sign, or a rewritten ledger
could be re-anchored. So the key comes from the environment (a file path, or the
PEM or base64 text itself) and lives only in the processes that sign; in console
mode (the local demo) one is generated once into the instance folder, readable by
its owner only from the first byte.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)

from app.config import ConfigError, Settings
from app.core.signed_note import key_fingerprint, origin_for, verifier_key

CONSOLE_KEY_FILE = "ledger-signing-key.pem"


@dataclass(frozen=True)
class LedgerKey:
    """The checkpoint signing key and the names it goes by."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def origin(self) -> str:
        """The log's origin line and key name in every checkpoint."""
        return origin_for(self.public)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public)

    def public_pem(self) -> str:
        return self.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def note_verifier_key(self) -> str:
        """The key as signed-note tooling takes it (``name+id+base64``)."""
        return verifier_key(self.origin, self.public)

    def __repr__(self) -> str:  # never the private key, in a log or a traceback
        return f"LedgerKey(fingerprint={self.fingerprint[:16]}…)"


def parse_signing_key(value: str, *, _read_files: bool = True) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file path, PEM text, or base64 (32-byte seed or DER)."""
    text = value.strip()
    if "-----BEGIN" in text:
        try:
            key = load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError("LEDGER_SIGNING_KEY: not a readable unencrypted PEM key") from error
    else:
        path = Path(text)
        try:
            is_file = _read_files and len(text) < 4096 and path.is_file()
        except OSError:
            is_file = False
        if is_file:
            try:
                content = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"LEDGER_SIGNING_KEY: cannot read {path}") from error
            return parse_signing_key(content, _read_files=False)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ConfigError(
                "LEDGER_SIGNING_KEY must be a file path, PEM text or base64"
            ) from error
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        try:
            key = load_der_private_key(raw, password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError("LEDGER_SIGNING_KEY: not an Ed25519 key") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("LEDGER_SIGNING_KEY must be an Ed25519 key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def console_key(instance_dir: Path) -> Ed25519PrivateKey:
    """The demo's key in the instance folder, generated on first use (mode 0600 throughout).

    It is written to a private temporary file and linked into place, so a second
    process starting at the same moment reads the same key, never a half-written one.
    """
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / CONSOLE_KEY_FILE
    if not path.exists():
        temporary = instance_dir / f".{CONSOLE_KEY_FILE}.{secrets.token_hex(8)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(private_key_pem(Ed25519PrivateKey.generate()))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process linked its key first: use that one
        finally:
            temporary.unlink(missing_ok=True)
    return parse_signing_key(path.read_text(encoding="ascii"), _read_files=False)


def load_ledger_key(settings: Settings) -> LedgerKey | None:
    """The configured key; in console mode without one, the instance folder's. Else None.

    A malformed key fails here, when the app starts; a missing one only fails the
    commands that sign (`ledger checkpoint`).
    """
    if settings.ledger_signing_key:
        return LedgerKey(parse_signing_key(settings.ledger_signing_key))
    if settings.sms_backend == "console":
        return LedgerKey(console_key(settings.instance_dir))
    return None
