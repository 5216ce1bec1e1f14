"""Inclusion proofs for evidence bundles: each event proven to be in a signed checkpoint.

An event is anchored by the newest published checkpoint, which covers every
event before it in the ledger's id order. Its proof is the RFC 6962 audit path
from the event's leaf to that checkpoint's root, computed from the stored tree
blocks and checked here before it goes into a bundle, so a bundle never carries
a proof that would not verify. Events newer than the checkpoint are listed as not
yet anchored, with what to do about it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.merkle import inclusion_proof, verify_inclusion
from app.ledger.checkpoints import CheckpointDirectory, CheckpointError, Published
from app.ledger.signing import LedgerKey
from app.ledger.timestamping import TimestampError, describe_timestamp
from app.ledger.tree import StoredTree, TreeError, event_leaf

HOW_TO_ANCHOR = (
    "run `flask --app app ledger checkpoint` (the clock process does it every "
    "LEDGER_CHECKPOINT_MINUTES), then export the bundle again"
)


@dataclass(frozen=True)
class Anchoring:
    """The checkpoint a bundle's proofs lead to, or why there is none."""

    published: Published | None
    key: LedgerKey | None
    problem: str | None = None


def anchoring_for(directory: Path, key: LedgerKey | None) -> Anchoring:
    """The newest published checkpoint, verified with `key`."""
    if key is None:
        return Anchoring(None, None, "LEDGER_SIGNING_KEY is not set here, so no checkpoint")
    try:
        published = CheckpointDirectory(directory).latest(key.public)
    except CheckpointError as error:
        return Anchoring(None, key, str(error))
    if published is None:
        return Anchoring(None, key, "no checkpoint has been published yet")
    return Anchoring(published, key)


def _iso(stamp) -> str | None:
    return stamp.isoformat().replace("+00:00", "Z") if stamp else None


def _checkpoint_section(published: Published) -> dict[str, Any]:
    section: dict[str, Any] = {
        "file": published.path.name,
        "note": published.signed.note.decode("utf-8"),
        "origin": published.signed.checkpoint.origin,
        "tree_size": published.size,
        "root_hash": published.root.hex(),
        "signed_at": _iso(published.signed_at),
        "rfc3161_response_base64": None,
        "rfc3161_gen_time": None,
    }
    if published.timestamp_response is not None:
        section["rfc3161_response_base64"] = base64.b64encode(published.timestamp_response).decode()
        try:
            info = describe_timestamp(published.timestamp_response, published.signed.note)
            section["rfc3161_gen_time"] = _iso(info.gen_time)
        except TimestampError:
            pass
    return section


def prove_events(
    session: Session, anchoring: Anchoring, events: list[Any]
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """({event id: its anchor}, the bundle's `transparency` section) for `events`.

    `events` are rows with `id` and `event_hash`. An event missing from the result
    is not anchored; the section says why.
    """
    section: dict[str, Any] = {
        "log_origin": anchoring.key.origin if anchoring.key else None,
        "key_fingerprint_sha256": anchoring.key.fingerprint if anchoring.key else None,
        "checkpoints": [],
        "anchored": 0,
        "not_anchored": [],
        "message": None,
    }
    anchors: dict[int, dict[str, Any]] = {}
    published = anchoring.published
    if published is None:
        section["not_anchored"] = [event.id for event in events]
        section["message"] = f"not anchored: {anchoring.problem}; {HOW_TO_ANCHOR}"
        return anchors, section
    section["checkpoints"].append(_checkpoint_section(published))
    problems: list[str] = []
    try:
        tree = StoredTree(session, published.size)
        for event in events:
            position = tree.position_of(event.id)
            if position is None:
                continue
            leaf = event_leaf(event.event_hash)
            proof = inclusion_proof(position, published.size, tree.subtree)
            if not verify_inclusion(position, published.size, leaf, proof, published.root):
                problems.append(f"event {event.id} does not verify against the checkpoint")
                continue
            anchors[event.id] = {
                "checkpoint": 0,
                "leaf_index": position,
                "tree_size": published.size,
                "inclusion_proof": [node.hex() for node in proof],
            }
    except TreeError as error:
        problems.append(str(error))
    section["anchored"] = len(anchors)
    section["not_anchored"] = [event.id for event in events if event.id not in anchors]
    if problems:
        section["message"] = (
            f"PROOF FAILED: {problems[0]}; the ledger no longer matches what was published "
            "(run `flask --app app ledger verify`)"
        )
    elif section["not_anchored"]:
        section["message"] = (
            f"{len(section['not_anchored'])} event(s) are newer than the last checkpoint "
            f"({published.size:,} events) and not yet anchored: {HOW_TO_ANCHOR}"
        )
    return anchors, section
