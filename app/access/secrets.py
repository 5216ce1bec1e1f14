"""TOTP seeds at rest: encrypted with a key from the environment (Fernet, authenticated).

A seed in the database is useless without `TOTP_ENCRYPTION_KEY`, which lives in
the environment only: a stolen database or backup does not let anyone produce a
staff member's codes. Fernet is AES-128-CBC with HMAC-SHA256 (encrypt-then-MAC),
so a changed ciphertext is refused, never decrypted into a wrong seed.

Rotation follows the pattern of `TWILIO_AUTH_TOKEN_PREVIOUS`: set the new key in
`TOTP_ENCRYPTION_KEY` and the old one in `TOTP_ENCRYPTION_KEY_PREVIOUS`, then run
`flask --app app staff rekey-totp`, which re-encrypts every seed under the new
key (`MultiFernet.rotate`); then drop the previous key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Every Fernet token starts with its version byte 0x80, base64 "gAAAAA"; a base32 seed never
# does. A value without it is a seed stored before encryption (see `encrypt_legacy_seeds`).
FERNET_PREFIX = "gAAAAA"


class SeedKeyError(ValueError):
    """A key is malformed, or no configured key opens a stored seed."""


def generate_key() -> str:
    """A new random key for `TOTP_ENCRYPTION_KEY` (32 bytes, url-safe base64)."""
    return Fernet.generate_key().decode("ascii")


class SeedCipher:
    """Encrypts seeds under the first key; decrypts with any of them (current, then previous)."""

    def __init__(self, keys: Sequence[str]) -> None:
        keys = [key for key in keys if key]
        if not keys:
            raise SeedKeyError("no TOTP encryption key")
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])

    def encrypt(self, seed: str) -> str:
        return self._fernet.encrypt(seed.encode("ascii")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The seed in `stored`; `SeedKeyError` when no key opens it or it was changed."""
        try:
            return self._fernet.decrypt(stored.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SeedKeyError(
                "a TOTP seed cannot be decrypted with TOTP_ENCRYPTION_KEY "
                "(or TOTP_ENCRYPTION_KEY_PREVIOUS)"
            ) from exc

    def rotate(self, stored: str) -> str:
        """`stored` encrypted again under the current key; a seed still in clear is encrypted."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            return self._fernet.rotate(stored.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SeedKeyError("a TOTP seed cannot be decrypted with the configured keys") from exc


def is_encrypted(stored: str) -> bool:
    return stored.startswith(FERNET_PREFIX)
