"""A request id for every web request, so its log lines (ours and gunicorn's) can be joined.

An incoming `X-Request-Id` (set by a router such as Heroku's, or by a caller) is
kept when it is a sane token; otherwise one is generated. Either way it is echoed
in the response's `X-Request-Id` header and added to every log line written
while the request runs (`app.logs.RequestContextFilter`). For Twilio's webhooks,
`I-Twilio-Idempotency-Token` (the same for Twilio's retries of one request) is
logged too.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-Id"
TWILIO_IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
# Letters, digits and a few separators, at most 128: anything else could forge log lines.
SANE_TOKEN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def sane_token(value: str | None) -> str | None:
    """`value` when it is a short token safe to log and echo, else None."""
    return value if value and SANE_TOKEN.match(value) else None


def register(app: Flask) -> None:
    """Give every request an id, and echo it in the response."""

    @app.before_request
    def _assign_request_id() -> None:
        g.request_id = sane_token(request.headers.get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
        token = sane_token(request.headers.get(TWILIO_IDEMPOTENCY_HEADER))
        if token:
            g.twilio_idempotency_token = token

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
