"""The sending rules in the console and the evidence: decisions per number, counts per rule,
and the rules in force on a day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.sending_rules import REPLY_EXEMPTION, REVOKE_ALL, FrequencyCap, QuietHours, RuleBook
from app.store.send_models import SendBatch, SendDecisionRecord


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def decisions_of(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    """Every sending-rules decision on one number, oldest first (evidence and timeline)."""
    rows = session.execute(
        select(SendDecisionRecord, SendBatch.public_id)
        .outerjoin(SendBatch, SendBatch.id == SendDecisionRecord.batch_id)
        .where(SendDecisionRecord.subscriber_id == subscriber_id)
        .order_by(SendDecisionRecord.id)
    ).all()
    return [
        {
            "id": record.id,
            "at": _iso(record.decided_at),
            "stage": record.stage,
            "batch": batch,
            "program": record.program_id,
            "purpose": record.purpose,
            "decision": record.decision,
            "reason": record.reason,
            "rule": record.rule_id,
            "citation": record.citation,
            "not_before": _iso(record.not_before),
            "local_time": record.local_time,
            "jurisdiction": record.jurisdiction,
            "ruleset": record.ruleset,
            "message_id": record.outbound_id,
        }
        for record, batch in rows
    ]


def counts_by_rule(session: Session, since: datetime) -> list[tuple[str, int, int]]:
    """(rule, deferred, refused) since `since`, busiest first (the dashboard)."""
    counts: dict[str, list[int]] = {}
    for decision, rule, count in session.execute(
        select(SendDecisionRecord.decision, SendDecisionRecord.rule_id, func.count())
        .where(
            SendDecisionRecord.decided_at >= since,
            SendDecisionRecord.decision.in_(["deferred", "refused"]),
        )
        .group_by(SendDecisionRecord.decision, SendDecisionRecord.rule_id)
    ):
        slot = counts.setdefault(rule or "—", [0, 0])
        slot[0 if decision == "deferred" else 1] += count
    return sorted(
        ((rule, d, r) for rule, (d, r) in counts.items()), key=lambda row: -(row[1] + row[2])
    )


def rules_in_force(book: RuleBook, day: date, revoke_all_from: date) -> list[dict[str, Any]]:
    """The rules in force on `day`, with what each says, its citation, source and dates
    (`revoke_all_from`: the configured `REVOKE_ALL_FROM`)."""
    rows = []
    for rule in book.in_force(day):
        kind = (
            "Quiet hours"
            if isinstance(rule, QuietHours)
            else "Frequency cap"
            if isinstance(rule, FrequencyCap)
            else "Opt-out kept"
        )
        rows.append(
            {
                "id": rule.id,
                "kind": kind,
                "jurisdiction": rule.jurisdiction,
                "says": rule.summary() + (" (marketing)" if kind != "Opt-out kept" else ""),
                "citation": rule.citation,
                "source": rule.source,
                "since": rule.in_force_from.isoformat() if rule.in_force_from else "long-standing",
                "until": rule.in_force_until.isoformat() if rule.in_force_until else None,
                "note": rule.note,
            }
        )
    for country, window in sorted(book.country_windows.items()):
        rows.append(
            {
                "id": f"{country}.quiet_hours",
                "kind": "Quiet hours",
                "jurisdiction": "every other country" if country == "*" else country,
                "says": f"{window.label()} every day (marketing)",
                "citation": "configured: NON_US_SENDING_WINDOWS",
                "source": "",
                "since": "configured",
                "until": None,
                "note": "",
            }
        )
    for citation in (REVOKE_ALL, REPLY_EXEMPTION):
        rows.append(
            {
                "id": citation.id,
                "kind": "Opt-out scope" if citation is REVOKE_ALL else "Replies",
                "jurisdiction": "US",
                "says": citation.summary,
                "citation": citation.citation,
                "source": citation.source,
                "since": citation.in_force_from.isoformat() if citation.in_force_from else "",
                "until": None,
                "note": ""
                if citation is not REVOKE_ALL or day >= REVOKE_ALL.in_force_from
                else "not yet in force (REVOKE_ALL_FROM)",
            }
        )
    return rows
