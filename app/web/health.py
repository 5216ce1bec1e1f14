"""Blueprint for health checks: liveness (`/healthz`) and readiness (`/readyz`).

- `/healthz` is for the load balancer: the process answers and its database does.
  It does not look at migrations or the sender, so a web instance keeps taking
  texts (which are durable) while a sender is being restarted.
- `/readyz` is for deploy gates and alerting: the database's schema is at the
  code's Alembic head (the release phase ran), and a sender worker has sent a
  heartbeat within `READY_SENDER_MAX_AGE_SECONDS` (0 turns that check off, for
  deployments that run no sender). Its JSON names every check and what is wrong.
"""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import context
from app.store.db import utcnow
from app.store.models import SenderHeartbeat

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@functools.cache
def code_head_revision() -> str | None:
    """The newest Alembic revision shipped with this code (read once per process)."""
    from app.store.migrate import head_revision

    return head_revision()


@bp.get("/healthz")
def healthz():
    """200 when the app runs and its database answers; 503 when the database does not."""
    try:
        with context.database().transaction(write=False) as session:
            session.execute(text("SELECT 1"))
    except DBAPIError:
        logger.warning("health check: database unreachable", exc_info=True)
        return jsonify(status="unavailable", database="unreachable"), 503
    return jsonify(status="ok")


def database_revision(session: Session) -> str | None:
    """The revision in `alembic_version`, or None when the table is missing or empty."""
    try:
        with session.begin_nested():
            return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def newest_heartbeat_age(session: Session) -> float | None:
    """Seconds since the newest sender heartbeat, or None when no sender has ever beaten."""
    newest = session.execute(select(func.max(SenderHeartbeat.beat_at))).scalar()
    if newest is None:
        return None
    if newest.tzinfo is None:  # SQLite's max() bypasses the column type
        newest = newest.replace(tzinfo=utcnow().tzinfo)
    return max(0.0, (utcnow() - newest).total_seconds())


@bp.get("/readyz")
def readyz():
    """200 when migrations are current and a sender is alive; else 503 naming what is wrong."""
    settings = context.settings()
    checks: dict[str, str] = {}
    try:
        with context.database().transaction(write=False) as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            current, head = database_revision(session), code_head_revision()
            checks["migrations"] = (
                "ok"
                if current == head
                else f"database at {current or 'no revision'}, code at {head}: run "
                "`flask --app app db upgrade`"
            )
            max_age = settings.ready_sender_max_age_seconds
            if max_age == 0:
                checks["sender"] = "not checked (READY_SENDER_MAX_AGE_SECONDS=0)"
            elif checks["migrations"] != "ok":
                checks["sender"] = "not checked until migrations are current"
            else:
                age = newest_heartbeat_age(session)
                if age is None:
                    checks["sender"] = "no sender worker has reported"
                elif age > max_age:
                    checks["sender"] = f"last heartbeat {age:.0f} s ago (limit {max_age:g} s)"
                else:
                    checks["sender"] = "ok"
    except DBAPIError:
        logger.warning("readiness check: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
    ready = all(value == "ok" or value.startswith("not checked (") for value in checks.values())
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503
