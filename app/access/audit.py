"""The access audit log: who looked at or exported consent data, when, and how much.

Every timeline view, page of the event log, unmask, search, export and evidence
download is one row (`StaffAuditEntry`), and so are sign-ins, review decisions,
account changes and every API request that returns personal data (naming the
token). An export writes its row before the first byte leaves and a second one
when it ends, finished or interrupted: the log is append-only, so "completing"
the first row means adding the row that refers to it.
The table is append-only: the database refuses UPDATE and DELETE. Callers own
the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.store.models import StaffAuditEntry, StaffUser

# Actions, as recorded.
LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
SEARCH = "search"
TIMELINE_VIEW = "timeline_view"
UNMASK = "unmask"
EXPORT = "export"
EVIDENCE_DOWNLOAD = "evidence_download"
REVIEW_DECISION = "review_decision"
REVIEW_QUEUE_VIEW = "review_queue_view"
STAFF_CREATE = "staff_create"
STAFF_UPDATE = "staff_update"
API_TOKEN_CREATE = "api_token_create"
API_TOKEN_REVOKE = "api_token_revoke"
AUDIT_VIEW = "audit_view"
EVENT_LOG_VIEW = "event_log_view"
EXPORT_STARTED = "export_started"
ENROL_LINK = "enrol_link"
ENROLLED = "enrolled"
PASSWORD_CHANGE = "password_change"
TOTP_REENROL = "totp_reenrol"
API_READ = "api_read"
LOOKUP = "lookup"
LEDGER_VERIFY_STARTED = "ledger_verify_started"
LEDGER_VERIFY = "ledger_verify"
TIME_ZONE_CHANGE = "time_zone_change"


def record_access(
    session: Session,
    *,
    staff: StaffUser | None,
    action: str,
    at: datetime,
    target: str | None = None,
    query: dict[str, Any] | None = None,
    row_count: int | None = None,
    sha256: str | None = None,
    ip: str | None = None,
    staff_email: str | None = None,
    api_token_id: int | None = None,
) -> StaffAuditEntry:
    """Append one entry to the access audit log."""
    entry = StaffAuditEntry(
        at=at,
        staff_id=staff.id if staff else None,
        staff_email=(staff.email if staff else staff_email),
        action=action,
        target=(target or None) and target[:200],
        query={k: v for k, v in (query or {}).items() if v not in (None, "")} or None,
        row_count=row_count,
        sha256=sha256,
        ip=(ip or "")[:64] or None,
        api_token_id=api_token_id,
    )
    session.add(entry)
    return entry
