#!/usr/bin/env python3
"""Check a consent evidence bundle offline, with nothing but this file and `cryptography`.

    python3 verify_bundle.py BUNDLE.json --key LEDGER_PUBLIC_KEY.pem

BUNDLE.json comes from `flask --app app evidence PHONE` (or the staff console's
download); the key from `flask --app app ledger public-key`, obtained from the
operator by a channel you trust. Exit 0 when every event in the bundle is proven
included in a checkpoint signed by that key; exit 1 otherwise, naming the first
event (or checkpoint) that fails.

For each event this recomputes, independently of the service's code:
- its hash, from the fields it was hashed over (`ledger_fields`), in the canonical
  form the bundle's `hash_format` describes, and that the fields shown to a reader
  are those fields;
- that it belongs to this number (the salted phone commitment) and that its text
  and disclosure are the ones committed to (the body commitment, the disclosure's
  SHA-256), where the personal data has not been removed by retention;
- the hash chain of the number's events (sequence numbers and previous hashes);
- its RFC 6962 inclusion proof to the root of a checkpoint;
and for each checkpoint: its C2SP signed-note format and Ed25519 signature by the
key, the time in its timestamped cosignature, and, when the bundle carries an RFC
3161 timestamp, that the timestamp is about that checkpoint. The timestamp
authority's own signature is not checked here: check it with the TSA's
certificate, e.g. `openssl ts -verify -data CHECKPOINT -in TOKEN.tsr -CAfile TSA-CA.pem`.

This file imports nothing from the service on purpose: it is a second, separate
implementation of the formats, so an expert can read it and run it alone.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import struct
import sys
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

HASH_FORMAT_VERSION = 1
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
# Fields a reader sees in the bundle, and the hashed field each must equal.
SHOWN_AS = {
    "seq": "seq",
    "kind": "kind",
    "message_sid": "message_sid",
    "to": "to_number",
    "intent": "intent",
    "rule": "rule",
    "language": "language",
    "program": "program_id",
    "status_before": "status_before",
    "status_after": "status_after",
    "changes": "changes",
    "possible_opt_out": "possible_opt_out",
    "actor": "actor",
    "note": "note",
    "disclosure_sha256": "disclosure_sha256",
    "prev_hash": "prev_hash",
}
GENESIS_HASH = "0" * 64
EM_DASH = "\u2014"
ORIGIN_PREFIX = "sms-consent-gateway/ledger/"


class Failure(Exception):
    """What is wrong, said as the line the verifier prints."""


# --------------------------------------------------------------------------- hashing


def canonical_event_hash(fields: dict) -> str:
    document = dict(fields)
    document["v"] = HASH_FORMAT_VERSION
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def commitment(label: str, salt: str, value: bytes) -> str:
    return hashlib.sha256(label.encode() + b"\0" + salt.encode() + b"\0" + value).hexdigest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """RFC 9162, section 2.1.3.2."""
    if not 0 <= index < size or any(len(p) != 32 for p in path):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn != 0 and fn % 2 == 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# --------------------------------------------------------------------------- checkpoints


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, signature_type: int, key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([signature_type]) + raw_public_key(key)
    ).digest()[:4]


def open_checkpoint(note: str, key: Ed25519PublicKey) -> tuple[str, int, bytes, int | None]:
    """(origin, tree size, root hash, cosigned time) of a signed checkpoint by `key`."""
    if not note.endswith("\n") or "\n\n" not in note:
        raise Failure("not a signed note (text, blank line, signature lines)")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Failure("a signed note holds no control characters but newlines")
    cut = note.rindex("\n\n")
    text, signature_block = note[: cut + 1], note[cut + 2 :]
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or not all(lines):
        raise Failure("a checkpoint has at least three non-empty lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise Failure("the tree size is not a plain decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Failure("the root hash is not base64") from error
    if len(root) != 32:
        raise Failure("the root hash is not 32 bytes")
    expected_origin = ORIGIN_PREFIX + hashlib.sha256(raw_public_key(key)).hexdigest()[:16]
    if origin != expected_origin:
        raise Failure(f"the checkpoint is of log {origin!r}, not of this key's {expected_origin!r}")
    log_id, cosign_id = key_id(origin, 0x01, key), key_id(origin, 0x04, key)
    signed, cosigned_time = False, None
    for line in signature_block[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise Failure(f"not a signature line: {line[:60]!r}")
        if parts[1] != origin:
            continue  # someone else's signature (a witness, say): ignored, as the spec says
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError) as error:
            raise Failure("a signature is not base64") from error
        try:
            if signature[:4] == log_id:
                key.verify(signature[4:], text.encode())
                signed = True
            elif signature[:4] == cosign_id and len(signature) == 76:
                (stamp,) = struct.unpack(">Q", signature[4:12])
                key.verify(signature[12:], f"cosignature/v1\ntime {stamp}\n{text}".encode())
                cosigned_time = stamp
        except InvalidSignature as error:
            raise Failure("a signature by the key does not verify (altered or forged)") from error
    if not signed:
        raise Failure("no signature by this key")
    return origin, int(size_text), root, cosigned_time


def der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at `offset`."""
    tag, length, start = data[offset], data[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated")
    return tag, start, start + length


def der_child(data: bytes, element: tuple[int, int, int], index: int) -> tuple[int, int, int]:
    """The `index`-th element inside a constructed DER element."""
    offset = element[1]
    for _ in range(index):
        offset = der_element(data, offset)[2]
    if offset >= element[2]:
        raise ValueError("missing element")
    return der_element(data, offset)


def timestamp_imprint(response: bytes) -> tuple[bytes, str]:
    """(SHA-256 message imprint, genTime) of an RFC 3161 TimeStampResp.

    TimeStampResp { status, timeStampToken ContentInfo { contentType, [0] SignedData {
    version, digestAlgorithms, encapContentInfo { eContentType, [0] OCTET STRING TSTInfo {
    version, policy, messageImprint { hashAlgorithm, hashedMessage }, serialNumber,
    genTime, ... } } } } }
    """
    try:
        token = der_child(response, der_element(response, 0), 1)
        signed_data = der_child(response, der_child(response, token, 1), 0)
        econtent = der_child(response, der_child(response, signed_data, 2), 1)
        tst_info = der_child(response, der_child(response, econtent, 0), 0)
        imprint = der_child(response, tst_info, 2)
        algorithm = der_child(response, der_child(response, imprint, 0), 0)
        digest = der_child(response, imprint, 1)
        gen_time = der_child(response, tst_info, 4)
    except (IndexError, ValueError) as error:
        raise Failure("its RFC 3161 timestamp cannot be read") from error
    if response[algorithm[1] : algorithm[2]] != bytes.fromhex("608648016503040201"):
        raise Failure("its RFC 3161 timestamp does not use SHA-256")
    return response[digest[1] : digest[2]], response[gen_time[1] : gen_time[2]].decode("ascii")


# --------------------------------------------------------------------------- events


def check_event(event: dict, phone: str, chain: dict, checkpoints: list) -> str:
    """Check one event; return a one-line summary of what was proven."""
    fields = event.get("ledger_fields")
    if not isinstance(fields, dict) or set(fields) != set(HASHED_FIELDS):
        raise Failure("the bundle lacks the fields its hash was computed from")
    if canonical_event_hash(fields) != event.get("event_hash"):
        raise Failure("its fields do not hash to its event hash (edited)")
    for shown, hashed in SHOWN_AS.items():
        if shown in event and event[shown] != fields[hashed]:
            raise Failure(f"'{shown}' shows {event[shown]!r} but the ledger has {fields[hashed]!r}")
    shown_at = datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
    if shown_at != datetime.fromisoformat(fields["occurred_at"].replace("Z", "+00:00")):
        raise Failure("'at' differs from the time in the ledger")

    if chain.get("subscriber") not in (None, fields["subscriber_id"]):
        raise Failure("it belongs to another subscriber's chain")
    expected_seq = chain.get("seq", 0) + 1
    if fields["seq"] != expected_seq:
        raise Failure(f"expected event #{expected_seq} of the chain, found #{fields['seq']}")
    if fields["prev_hash"] != chain.get("head", GENESIS_HASH):
        raise Failure("it does not link to the previous event of the chain")
    chain.update(subscriber=fields["subscriber_id"], seq=fields["seq"], head=event["event_hash"])

    salt = event.get("personal_salt")
    notes = []
    if salt:
        if commitment("phone", salt, phone.encode()) != fields["phone_commitment"]:
            raise Failure(f"it is not about {phone} (phone commitment differs)")
        body = (
            base64.b64decode(event["body_raw_base64"])
            if event.get("body_raw_base64")
            else (event["body"].encode() if event.get("body") is not None else None)
        )
        if body is not None and commitment("body", salt, body) != fields["body_commitment"]:
            raise Failure("its message text is not the one in the ledger")
    elif event.get("body") is not None:
        raise Failure("a message text without its salt cannot be checked")
    else:
        notes.append("personal data removed: not tied to the number")
    for text_key, hash_key in (("disclosure", "disclosure_sha256"), ("reply_text", "reply_sha256")):
        value = event.get(text_key)
        if value is not None and hashlib.sha256(value.encode()).hexdigest() != fields[hash_key]:
            raise Failure(f"its {text_key.replace('_', ' ')} is not the one in the ledger")

    anchor = event.get("anchor")
    if not anchor:
        raise Failure("not anchored: newer than the last signed checkpoint in the bundle")
    try:
        checkpoint = checkpoints[anchor["checkpoint"]]
        size, index = anchor["tree_size"], anchor["leaf_index"]
        path = [bytes.fromhex(node) for node in anchor["inclusion_proof"]]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise Failure("its inclusion proof is malformed") from error
    if size != checkpoint["size"]:
        raise Failure("its proof is for another tree size than its checkpoint's")
    root = root_from_inclusion(index, size, leaf_hash(bytes.fromhex(event["event_hash"])), path)
    if root is None or not hmac.compare_digest(root, checkpoint["root"]):
        raise Failure("its inclusion proof does not lead to the checkpoint's root")
    summary = f"included as leaf {index:,} of {size:,} ({checkpoint['label']})"
    return summary + (f"; {'; '.join(notes)}" if notes else "")


def verify(bundle: dict, key: Ed25519PublicKey, out) -> int:
    if (bundle.get("hash_format") or {}).get("version") != HASH_FORMAT_VERSION:
        raise Failure("bundle: not a self-checking evidence bundle (no hash_format version 1)")
    transparency = bundle.get("transparency") or {}
    checkpoints = []
    for number, entry in enumerate(transparency.get("checkpoints") or []):
        try:
            origin, size, root, stamp = open_checkpoint(entry["note"], key)
        except Failure as failure:
            raise Failure(f"checkpoint {number}: {failure}") from failure
        if entry.get("tree_size") != size or entry.get("root_hash") != root.hex():
            raise Failure(f"checkpoint {number}: its listed size or root differ from its note")
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if stamp else "?"
        label = f"checkpoint of {size:,} events signed {when}"
        if entry.get("rfc3161_response_base64"):
            digest, gen_time = timestamp_imprint(base64.b64decode(entry["rfc3161_response_base64"]))
            if digest != hashlib.sha256(entry["note"].encode()).digest():
                raise Failure(f"checkpoint {number}: its RFC 3161 timestamp is for something else")
            label += f", RFC 3161 time {gen_time}"
        checkpoints.append({"size": size, "root": root, "label": label})
        print(f"checkpoint {number}: {origin}, {label}: signature valid", file=out)
    events = bundle.get("events") or []
    if not events:
        raise Failure("bundle: no events")
    chain: dict = {}
    for event in events:
        try:
            summary = check_event(event, bundle["phone"], chain, checkpoints)
        except Failure as failure:
            raise Failure(f"event {event.get('id')}: {failure}") from failure
        except (KeyError, TypeError, ValueError) as error:
            raise Failure(f"event {event.get('id')}: malformed ({error})") from error
        print(
            f"event {event['id']} (#{event['seq']}, {event['intent']}, {event['at']}): "
            f"hash, chain and commitments valid; {summary}",
            file=out,
        )
    return len(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="the evidence bundle (JSON)")
    parser.add_argument("--key", required=True, help="the ledger's public key (PEM)")
    args = parser.parse_args(argv)
    try:
        with open(args.key, "rb") as handle:
            key = load_pem_public_key(handle.read())
        if not isinstance(key, Ed25519PublicKey):
            raise Failure("key: not an Ed25519 public key")
        with open(args.bundle, encoding="utf-8") as handle:
            bundle = json.load(handle)
        count = verify(bundle, key, sys.stdout)
    except Failure as failure:
        print(f"FAILED: {failure}")
        return 1
    except (OSError, ValueError) as error:
        print(f"FAILED: cannot read the input: {error}")
        return 1
    fingerprint = hashlib.sha256(raw_public_key(key)).hexdigest()
    print(
        f"OK: all {count} events of {bundle['phone']} are proven included in checkpoints "
        f"signed by the key with SHA-256 fingerprint {fingerprint}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
