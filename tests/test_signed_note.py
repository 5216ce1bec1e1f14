"""Signed notes and checkpoints in the C2SP formats, checked against the reference vectors."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.core.signed_note import (
    EM_DASH,
    Checkpoint,
    NoteError,
    key_id,
    note_signature,
    open_checkpoint,
    origin_for,
    parse_checkpoint_text,
    sign_checkpoint,
    signature_line,
    split_note,
    verifier_key,
)

# The known-answer example of golang.org/x/mod/sumdb/note (the signed-note reference
# implementation): a private key, a text, and the exact signed note it makes.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_key() -> Ed25519PrivateKey:
    encoded = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert encoded[0] == 1  # Ed25519
    return Ed25519PrivateKey.from_private_bytes(encoded[1:])


def test_signatures_and_keys_match_the_go_reference_byte_for_byte():
    key = go_key()
    assert key_id("PeterNeumann", 1, key.public_key()).hex() == "c74f20a3"
    assert verifier_key("PeterNeumann", key.public_key()) == GO_VERIFIER_KEY
    line = signature_line("PeterNeumann", note_signature(GO_TEXT, "PeterNeumann", key))
    assert GO_TEXT + "\n" + line == GO_NOTE
    text, signatures = split_note(GO_NOTE.encode())
    assert text == GO_TEXT and signatures[0][0] == "PeterNeumann"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make(key, size=20852163, timestamp=1679315147) -> bytes:
    root = hashlib.sha256(b"root").digest()
    return sign_checkpoint(Checkpoint(origin_for(key.public_key()), size, root), key, timestamp)


def test_a_checkpoint_is_three_lines_then_two_signature_lines(key):
    note = make(key).decode()
    origin = origin_for(key.public_key())
    lines = note.split("\n")
    assert lines[:4] == [
        origin,
        "20852163",
        base64.b64encode(hashlib.sha256(b"root").digest()).decode(),
        "",
    ]
    assert all(line.startswith(f"{EM_DASH} {origin} ") for line in lines[4:6]) and lines[6] == ""
    assert "+" not in origin and " " not in origin


def test_open_returns_the_checkpoint_and_the_cosigned_time(key):
    signed = open_checkpoint(make(key), key.public_key())
    assert signed.checkpoint.size == 20852163
    assert signed.checkpoint.root_hash == hashlib.sha256(b"root").digest()
    assert signed.timestamp == 1679315147


def test_the_cosignature_follows_tlog_cosignature_v1(key):
    """Checked by hand from the spec: key ID with type 0x04, u64 time, Ed25519 over the message."""
    note = make(key).decode()
    text = note[: note.index("\n\n") + 1]
    cosignature = base64.b64decode(note.split("\n")[5].split(" ")[2])
    name = origin_for(key.public_key())
    raw = key.public_key().public_bytes_raw()
    assert cosignature[:4] == hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4]
    assert struct.unpack(">Q", cosignature[4:12]) == (1679315147,)
    message = f"cosignature/v1\ntime 1679315147\n{text}".encode()
    key.public_key().verify(cosignature[12:], message)  # raises if wrong


def test_the_wrong_key_is_refused(key):
    with pytest.raises(NoteError):
        open_checkpoint(make(key), Ed25519PrivateKey.generate().public_key())


def test_a_foreign_signature_is_ignored_and_a_missing_log_signature_refused(key):
    note = make(key)
    other = Ed25519PrivateKey.generate()
    text = note.decode()[: note.decode().index("\n\n") + 1]
    foreign = signature_line(
        "witness.example/w1", note_signature(text, "witness.example/w1", other)
    )
    assert open_checkpoint(note + foreign.encode(), key.public_key()).checkpoint.size == 20852163
    only_cosignature = text + "\n" + note.decode().split("\n")[5] + "\n"
    with pytest.raises(NoteError, match="no signature by the ledger key"):
        open_checkpoint(only_cosignature.encode(), key.public_key())


def test_any_changed_byte_is_refused(key):
    note = make(key)
    for position in range(len(note)):
        changed = bytearray(note)
        changed[position] ^= 0x01
        try:
            signed = open_checkpoint(bytes(changed), key.public_key())
        except NoteError:
            continue
        # Only a change the format ignores may pass, and it must mean the same checkpoint.
        assert signed.checkpoint == open_checkpoint(note, key.public_key()).checkpoint, position


@pytest.mark.parametrize(
    "text",
    [
        "origin\n20\n",  # two lines
        "origin\n020\nAAAA\n",  # leading zero
        "origin\n-1\n" + base64.b64encode(b"x" * 32).decode() + "\n",
        "origin\n20\n" + base64.b64encode(b"x" * 31).decode() + "\n",
        "origin\n20\nnot base64!\n",
        "origin\n\n20\n" + base64.b64encode(b"x" * 32).decode() + "\n",
    ],
)
def test_malformed_checkpoint_texts_are_refused(text):
    with pytest.raises(NoteError):
        parse_checkpoint_text(text)


def test_extension_lines_are_allowed_and_ignored():
    root = base64.b64encode(b"x" * 32).decode()
    assert parse_checkpoint_text(f"o\n7\n{root}\nextension\n").size == 7


@pytest.mark.parametrize(
    "note",
    [
        b"no blank line\n\xe2\x80\x94 a AAAAAAA=\n",
        "text\n\n— a AAAAAAA=".encode(),  # no final newline
        b"text\n\n- a AAAAAAA=\n",  # a hyphen, not an em dash
        "text\n\n— a !!!\n".encode(),
        "te\x01xt\n\n— a AAAAAAA=\n".encode(),
        b"\xff\n\n",
    ],
)
def test_malformed_notes_are_refused(note):
    with pytest.raises(NoteError):
        split_note(note)
