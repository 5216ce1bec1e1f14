"""Logging: one JSON object per line on stdout in production, key=value text for local runs.

Every process (gunicorn's master and workers, the sender worker, CLI commands)
logs through the root logger configured here, once. `LOG_FORMAT` picks the
shape: ``json`` (the default; what a log pipeline parses) or ``text`` (what
`make run` uses, for people reading a terminal).

The ids a line is about travel in ``extra={...}`` (``message_sid``,
``event_id``, ``outbound_id``…) and become fields of the JSON object. During a
web request, `RequestContextFilter` adds the request's id (`X-Request-Id`, see
`app.web.request_ids`) and Twilio's idempotency token, so every line a request
causes can be found together. Bodies and full phone numbers are never logged at
INFO; that is the callers' discipline, checked by the tests.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")

# Attributes every LogRecord has; anything else came in through `extra={...}`.
_RECORD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFormatter(logging.Formatter):
    """Appends the ids passed in `extra={...}` as key=value pairs, so they reach the log."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        context = [
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        ]
        return f"{line} {' '.join(context)}" if context else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, then the ids."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S",
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        import time

        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class RequestContextFilter(logging.Filter):
    """Adds the current web request's id (and Twilio's idempotency token) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context

        if has_request_context():
            for name in ("request_id", "twilio_idempotency_token"):
                value = g.get(name)
                if value and not hasattr(record, name):
                    setattr(record, name, value)
        return True


REDACTED = "<redacted>"
_SECRET_SEGMENT_AFTER = frozenset({"enrol"})  # /staff/enrol/<token>: the token opens an account


def redact_path(path: str) -> str:
    """A request path fit for the access log: no phone number and no enrolment token in it.

    `GET /api/v1/subscribers/<phone>` names a number in its path; any segment with
    seven or more digits (a phone number in any form) is replaced, and so is the
    segment after /staff/enrol/. Short ids ("/staff/subscribers/42") stay.
    """
    segments = path.split("/")
    for index, segment in enumerate(segments):
        after_secret = index > 0 and segments[index - 1] in _SECRET_SEGMENT_AFTER
        if after_secret or sum(ch.isdigit() for ch in segment) >= 7:
            segments[index] = REDACTED
    return "/".join(segments)


class GunicornAccessFields(logging.Filter):
    """Lifts gunicorn's access-log atoms into fields, so an access line is parseable JSON.

    Only the method, path (no query string, numbers and tokens redacted), status,
    duration and request id are kept: the query string, the raw request line and
    the client's headers could carry personal data. Installed on the
    ``gunicorn.access`` logger itself, so every handler gets the redacted record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, dict):  # gunicorn's SafeAtoms: changed in place, it answers "-"
            path = redact_path(str(atoms.get("U") or ""))
            atoms["U"] = path
            for name in ("r", "q", "f", "{raw_uri}e", "{path_info}e", "{query_string}e"):
                if name in atoms:
                    atoms[name] = "-"
            record.http_method = atoms.get("m")
            record.path = path
            status = atoms.get("s")
            record.status = int(status) if str(status).isdigit() else status
            duration = atoms.get("D")
            if isinstance(duration, int):
                record.duration_ms = round(duration / 1000, 1)
            request_id = atoms.get("{x-request-id}o")
            if request_id and request_id != "-":
                record.request_id = request_id
        return True


def log_format(env: dict[str, str] | None = None) -> str:
    """`LOG_FORMAT` from the environment: json (default) or text."""
    env = os.environ if env is None else env
    value = (env.get("LOG_FORMAT") or "json").strip().lower()
    return value if value in LOG_FORMATS else "json"


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for `fmt` (json or text)."""
    if fmt == "text":
        return ContextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    return JsonLineFormatter()


def make_handler(fmt: str | None = None) -> logging.Handler:
    """A stdout handler (stderr for text, as before) with the request-context filter."""
    fmt = fmt or log_format()
    handler = logging.StreamHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RequestContextFilter())
    return handler


def configure_logging() -> None:
    """Configure the root logger once per process; gunicorn's own loggers are left to it.

    When gunicorn.conf.py has already installed our handler (its `logconfig_dict`),
    the root logger has a handler and nothing is added twice.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(make_handler())
        root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def gunicorn_logconfig(fmt: str | None = None, level: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` for gunicorn.conf.py: its logs and ours, in one format."""
    fmt = fmt or log_format()
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    stream = "ext://sys.stdout" if fmt == "json" else "ext://sys.stderr"
    formatter = (
        {"()": "app.logs.JsonLineFormatter"}
        if fmt == "json"
        else {
            "()": "app.logs.ContextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {
            "request_context": {"()": "app.logs.RequestContextFilter"},
            "access_fields": {"()": "app.logs.GunicornAccessFields"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_context"],
                "stream": stream,
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["access_fields"],
                "stream": stream,
            },
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["default"], "propagate": False},
            "gunicorn.access": {
                "level": "INFO",
                "handlers": ["access"],
                "filters": ["access_fields"],
                "propagate": False,
            },
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }
