"""The one door to Twilio: webhook signatures, sending, and error mapping.

`build_gateway(settings)` is called inside `create_app` (never at import time) and
returns either the real Twilio gateway or the console gateway. Both turn every
failure into `SmsSendError`, whose `retryable` flag is all the sender needs to
decide between "try again later" and "give up now".

Besides sending, a gateway can list the recent messages to one number
(`recent_messages`): when an earlier attempt's outcome is unknown (its worker
died, or Twilio's answer never arrived), the sender looks there before sending
again, so a message Twilio already accepted is adopted instead of duplicated.
"""

from __future__ import annotations

import hmac
import logging
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.datastructures import MultiDict

from app.config import Settings

logger = logging.getLogger(__name__)

TWILIO_API_BASE_URL = "https://api.twilio.com"

# Twilio error codes (https://www.twilio.com/docs/api/errors) that decide what the sender does.
ERROR_UNSUBSCRIBED = 21610  # the recipient replied STOP at the carrier: a carrier opt-out
PERMANENT_ERRORS = frozenset(
    {
        21211,  # invalid 'To' phone number
        21212,  # invalid 'From' phone number
        21214,  # 'To' phone number cannot be reached
        21408,  # permission to send to this region is not enabled
        21602,  # message body is required
        21604,  # 'To' phone number is required
        21606,  # the 'From' number is not a valid message-capable number
        21612,  # the 'To' number is not reachable via this 'From'
        21614,  # 'To' number is not a valid mobile number
        21617,  # body exceeds the 1600 character limit
        ERROR_UNSUBSCRIBED,
        30003,  # unreachable destination handset
        30005,  # unknown destination handset
        30006,  # landline or unreachable carrier
    }
)
RETRYABLE_HTTP_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# How many of a recipient's newest messages are searched for an earlier attempt.
RECENT_MESSAGES_LIMIT = 20


class SmsSendError(Exception):
    """A reply could not be handed to Twilio.

    `retryable` says whether the same request may succeed later (429, 5xx,
    timeouts); `code` is Twilio's error code when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.http_status = http_status

    @property
    def carrier_opt_out(self) -> bool:
        """Twilio refused because the recipient opted out at the carrier (error 21610)."""
        return self.code == ERROR_UNSUBSCRIBED


@dataclass(frozen=True)
class OutgoingSms:
    """One reply to hand over: who to, from whom, what, and where to report its status."""

    to: str
    body: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None


@dataclass(frozen=True)
class SendReceipt:
    """Twilio accepted the message: its SID and initial status."""

    sid: str
    status: str


@dataclass(frozen=True)
class SentMessage:
    """A message Twilio holds for one recipient, as its Messages list reports it."""

    sid: str
    status: str
    body: str
    created_at: datetime | None


@runtime_checkable
class SmsGateway(Protocol):
    """What the service needs from an SMS backend: the sender, and erasure's clean-up.

    Every method raises `SmsSendError` (with its `retryable` flag) for anything the
    backend refused or could not be reached for; never a library's own exception.
    """

    name: str

    def send(self, sms: OutgoingSms) -> SendReceipt:
        """Hand one message over; the receipt carries the backend's SID."""
        ...

    def recent_messages(self, to: str, from_number: str | None) -> list[SentMessage]:
        """The newest messages sent to `to` (from `from_number` when given), newest first."""
        ...

    def delete_message(self, sid: str) -> bool:
        """Delete the backend's copy of a message; False when it was already gone."""
        ...

    def warm_up(self) -> None:
        """Prepare whatever the first send would otherwise pay for."""
        ...


class TwilioGateway:
    """Sends through Twilio's REST API with an explicit timeout.

    `api_base_url` replaces https://api.twilio.com (a local fake in tests);
    twilio-python resolves every Messages URL against the `api` domain's base.
    """

    name = "twilio"

    def __init__(
        self, account_sid: str, auth_token: str, *, api_base_url: str, timeout: float
    ) -> None:
        self.account_sid = account_sid
        self.client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
        if api_base_url.rstrip("/") != TWILIO_API_BASE_URL:
            self.client.api.base_url = api_base_url.rstrip("/")

    def warm_up(self) -> None:
        """Import the Messages API now (twilio-python does it on first use), so the first
        reply does not leave tens of milliseconds after its send slot. Only the sender
        calls this: web workers never send and need not pay for it at start-up."""
        self.client.messages  # noqa: B018

    def send(self, sms: OutgoingSms) -> SendReceipt:
        params: dict[str, str] = {"to": sms.to, "body": sms.body}
        if sms.messaging_service_sid:
            params["messaging_service_sid"] = sms.messaging_service_sid
        elif sms.from_number:
            params["from_"] = sms.from_number
        else:
            raise SmsSendError("no sender: no Messaging Service or from number", retryable=False)
        if sms.status_callback:
            params["status_callback"] = sms.status_callback
        with _twilio_errors():
            message = self.client.messages.create(**params)
        return SendReceipt(sid=message.sid, status=message.status or "queued")

    def delete_message(self, sid: str) -> bool:
        """Delete Twilio's copy of one message (for an erasure). True when deleted, False when
        Twilio has no such message (already deleted, or never Twilio's); SmsSendError when
        Twilio refuses (a message still being sent cannot be deleted yet) or cannot be reached."""
        try:
            with _twilio_errors():
                self.client.messages(sid).delete()
        except SmsSendError as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def recent_messages(self, to: str, from_number: str | None) -> list[SentMessage]:
        """The newest messages to `to` (and from `from_number`, when known), newest first.

        No date filter: Twilio's `DateSent` filter works on whole days and skips
        messages not yet sent, which are exactly the ones an interrupted attempt
        may have left behind.
        """
        params: dict[str, str] = {"to": to}
        if from_number:
            params["from_"] = from_number
        with _twilio_errors():
            found = self.client.messages.list(**params, limit=RECENT_MESSAGES_LIMIT)
        return [
            SentMessage(
                sid=m.sid, status=m.status or "", body=m.body or "", created_at=m.date_created
            )
            for m in found
        ]


@contextmanager
def _twilio_errors() -> Iterator[None]:
    """Every failure of a call to Twilio's REST API as `SmsSendError`, retryable or not."""
    try:
        yield
    except TwilioRestException as exc:
        raise _from_rest_exception(exc) from exc
    except requests.Timeout as exc:
        raise SmsSendError("Twilio did not answer in time", retryable=True) from exc
    except requests.RequestException as exc:
        raise SmsSendError(f"Twilio unreachable: {type(exc).__name__}", retryable=True) from exc
    except TwilioException as exc:
        raise SmsSendError(f"Twilio client error: {exc}", retryable=True) from exc


def _from_rest_exception(exc: TwilioRestException) -> SmsSendError:
    """Map Twilio's REST error onto retry-or-not."""
    code = exc.code if isinstance(exc.code, int) else None
    status = exc.status if isinstance(exc.status, int) else None
    if code in PERMANENT_ERRORS:
        retryable = False
    else:
        retryable = status in RETRYABLE_HTTP_STATUSES or (status is not None and status >= 500)
    return SmsSendError(
        f"Twilio refused the message: HTTP {status}, error {code}: {exc.msg}",
        retryable=retryable,
        code=code,
        http_status=status,
    )


class ConsoleGateway:
    """The local demo backend: prints each reply instead of sending it.

    Messages still go through the outbox, the consent check and the pacing; the
    SID it returns is made up (it starts with "SMconsole") and no status
    callback will ever arrive for it.
    """

    name = "console"

    def __init__(self, stream=None) -> None:
        self.stream = stream

    def warm_up(self) -> None:
        """Nothing to prepare."""

    def send(self, sms: OutgoingSms) -> SendReceipt:
        sid = "SMconsole" + uuid.uuid4().hex[:23]
        sender = sms.messaging_service_sid or sms.from_number or "-"
        stream = self.stream or sys.stdout
        print(f"[console SMS] {sid} to {sms.to} from {sender}: {sms.body}", file=stream, flush=True)
        return SendReceipt(sid=sid, status="sent")

    def recent_messages(self, to: str, from_number: str | None) -> list[SentMessage]:
        """Printed replies reach no one, so there is nothing to find and nothing to duplicate."""
        return []

    def delete_message(self, sid: str) -> bool:
        """A printed reply leaves no copy anywhere: there is nothing to delete."""
        return False


def build_gateway(settings: Settings) -> SmsGateway:
    """The gateway `settings` ask for."""
    if settings.sms_backend == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token  # checked by Settings
        return TwilioGateway(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            api_base_url=settings.twilio_api_base_url,
            timeout=settings.twilio_http_timeout,
        )
    return ConsoleGateway()


def validate_signature(
    auth_tokens: Iterable[str], url: str, params: Mapping, signature: str | None
) -> bool:
    """Is `signature` Twilio's signature of `params` posted to `url`, with one of `auth_tokens`?

    twilio's `RequestValidator` does the work (including the with- and
    without-port variants of the URL and a constant-time comparison); trying
    each token lets a rotated-out token keep working while Twilio catches up.
    """
    if not signature:
        return False
    params = _multi_dict(params)
    validators = [RequestValidator(token) for token in auth_tokens]
    # Fast path: the URL exactly as Twilio called it, one HMAC per token.
    for validator in validators:
        if hmac.compare_digest(validator.compute_signature(url, params), signature):
            return True
    # Otherwise the full check, which also tries the URL with and without its port.
    return any(validator.validate(url, params, signature) for validator in validators)


def _multi_dict(params: Mapping) -> MultiDict:
    """`params` with repeated fields as a MultiDict, the shape twilio's validator reads lists from.

    Given a plain dict holding a list, `RequestValidator` tries to hash the list
    and raises TypeError: a repeated form field, signed or not, was a 500.
    """
    pairs = []
    for name, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            pairs.append((name, item))
    return MultiDict(pairs)
