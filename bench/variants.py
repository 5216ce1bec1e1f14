"""Variants of the service for `bench/shipped.py`: the app with one shipped feature taken away.

Only the benchmark uses these; they patch nothing outside the process that serves them.
"""

from __future__ import annotations

from flask import Flask


def app_without_metrics() -> Flask:
    """The service with its webhook counting hooks (`app.web.metrics`) made no-ops."""
    from app import create_app
    from app.web import metrics

    metrics.webhook_started = lambda: None
    metrics.webhook_answered = lambda _webhook, response: response
    return create_app()
