"""Blueprint for the load balancer's health check."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import context

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


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
