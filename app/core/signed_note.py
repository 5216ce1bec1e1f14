"""Signed checkpoints in the C2SP formats, so transparency-log tooling can read them. Pure.

A checkpoint (https://c2sp.org/tlog-checkpoint) is a signed note
(https://c2sp.org/signed-note) whose text is three lines: the log's origin, the
tree size, and the base64 root hash. We add no extension lines (the spec
advises against them). Two signature lines follow a blank line, both made with
the ledger's one Ed25519 key under the origin as key name:

- the log's signature (signature type 0x01): Ed25519 over the note text; this is
  the line tools such as Go's `golang.org/x/mod/sumdb/note` verify;
- a timestamped cosignature (type 0x04, https://c2sp.org/tlog-cosignature): Ed25519
  over ``cosignature/v1\\ntime <POSIX seconds>\\n`` followed by the note text,
  which binds the time of signing to the checkpoint without extension lines.

Each signature line is ``— <key name> <base64(key ID || signature)>``; a key ID is
the first four bytes of SHA-256(key name || 0x0A || type || 32-byte public key).
Reusing one key for both types is safe here: a note text of ours starts with the
origin, never with ``cosignature/v1``, so neither signature can pass for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNATURE_ED25519 = 0x01
SIGNATURE_COSIGNATURE_V1 = 0x04
EM_DASH = "\u2014"
ORIGIN_PREFIX = "sms-consent-gateway/ledger/"
MAX_SIGNATURES = 16
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class NoteError(ValueError):
    """A note or checkpoint that is malformed, or not signed by the expected key."""


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex: what the console shows and operators compare."""
    return hashlib.sha256(public_key_bytes(key)).hexdigest()


def origin_for(key: Ed25519PublicKey) -> str:
    """The log's origin (also its key name): fixed by the key, so it never drifts with config."""
    return ORIGIN_PREFIX + key_fingerprint(key)[:16]


def key_id(name: str, signature_type: int, key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID of `key` under `name` for a signature type (signed-note spec)."""
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key_bytes(key)
    return hashlib.sha256(material).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The key in the signed-note "vkey" form, ``<name>+<hex key ID>+<base64(0x01 || key)>``."""
    encoded = base64.b64encode(bytes([SIGNATURE_ED25519]) + public_key_bytes(key)).decode()
    return f"{name}+{key_id(name, SIGNATURE_ED25519, key).hex()}+{encoded}"


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: whose log, how many leaves, and their root hash."""

    origin: str
    size: int
    root_hash: bytes

    def text(self) -> str:
        """The note text: three newline-terminated lines."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature verified, with the time its cosignature states."""

    checkpoint: Checkpoint
    timestamp: int | None
    note: bytes


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def signature_line(name: str, signature: bytes) -> str:
    """``— <name> <base64(key ID || signature)>`` and a newline."""
    return f"{EM_DASH} {name} {base64.b64encode(signature).decode()}\n"


def note_signature(text: str, name: str, key: Ed25519PrivateKey) -> bytes:
    """Key ID and Ed25519 signature (type 0x01) of a note text, as a signature line holds them."""
    return key_id(name, SIGNATURE_ED25519, key.public_key()) + key.sign(text.encode("utf-8"))


def timestamped_cosignature(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """Key ID, timestamp and signature of a tlog-cosignature/v1 (type 0x04)."""
    return (
        key_id(name, SIGNATURE_COSIGNATURE_V1, key.public_key())
        + struct.pack(">Q", timestamp)
        + key.sign(_cosigned_message(text, timestamp))
    )


def sign_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey, timestamp: int) -> bytes:
    """The signed note of `checkpoint`: the log signature, then the timestamped cosignature."""
    if checkpoint.origin != origin_for(key.public_key()):
        raise NoteError("a checkpoint is signed under its own origin")
    text, name = checkpoint.text(), checkpoint.origin
    lines = signature_line(name, note_signature(text, name, key)) + signature_line(
        name, timestamped_cosignature(text, name, key, timestamp)
    )
    return (text + "\n" + lines).encode("utf-8")


def split_note(note: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, decoded signature)]) of a signed note, or NoteError."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NoteError("a signed note is UTF-8") from error
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise NoteError("a signed note has no control characters but newlines")
    if not decoded.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    cut = decoded.rfind("\n\n")
    if cut < 0:
        raise NoteError("a signed note separates text and signatures with a blank line")
    text, block = decoded[: cut + 1], decoded[cut + 2 :]
    signatures = []
    for line in block[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH or not parts[1]:
            raise NoteError(f"not a signature line: {line[:80]!r}")
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError) as error:
            raise NoteError("a signature is base64") from error
        if len(signature) < 5:
            raise NoteError("a signature holds a key ID and signature bytes")
        signatures.append((parts[1], signature))
    if not signatures or len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"a signed note carries 1 to {MAX_SIGNATURES} signatures")
    return text, signatures


def parse_checkpoint_text(text: str) -> Checkpoint:
    """The checkpoint in a note text (extension lines are allowed and ignored)."""
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint has at least three non-empty lines")
    origin, size, root = lines[:3]
    if not _DECIMAL.fullmatch(size):
        raise NoteError("a checkpoint's tree size is a decimal number without leading zeros")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NoteError("a checkpoint's root hash is base64") from error
    if len(root_hash) != 32:
        raise NoteError("a checkpoint's root hash has 32 bytes")
    return Checkpoint(origin, int(size), root_hash)


def open_checkpoint(note: bytes, key: Ed25519PublicKey) -> SignedCheckpoint:
    """Parse a signed checkpoint and verify it was signed by `key`; NoteError otherwise.

    As the spec says: signatures by other keys are ignored, a signature by our key
    (same name and key ID) that fails rejects the note, and at least the log
    signature must be there. The cosignature, when present, gives the time.
    """
    text, signatures = split_note(note)
    checkpoint = parse_checkpoint_text(text)
    name = origin_for(key)
    if checkpoint.origin != name:
        raise NoteError(f"the checkpoint is of log {checkpoint.origin!r}, not {name!r}")
    log_id = key_id(name, SIGNATURE_ED25519, key)
    cosign_id = key_id(name, SIGNATURE_COSIGNATURE_V1, key)
    signed = False
    timestamp = None
    for signer, signature in signatures:
        if signer != name:
            continue
        try:
            if signature[:4] == log_id:
                key.verify(signature[4:], text.encode("utf-8"))
                signed = True
            elif signature[:4] == cosign_id:
                if len(signature) != 4 + 8 + 64:
                    raise NoteError("a cosignature holds a key ID, a timestamp and a signature")
                (stamp,) = struct.unpack(">Q", signature[4:12])
                key.verify(signature[12:], _cosigned_message(text, stamp))
                timestamp = stamp
        except InvalidSignature as error:
            raise NoteError("a signature by the ledger key does not verify") from error
    if not signed:
        raise NoteError("the checkpoint carries no signature by the ledger key")
    return SignedCheckpoint(checkpoint, timestamp, note)
