"""A local fake of Twilio's Messages API, for end-to-end tests (TWILIO_API_BASE_URL).

It accepts `POST /2010-04-01/Accounts/<sid>/Messages.json` like Twilio does,
records each request with the time it arrived, and answers with a Twilio-shaped
201. `GET` on the same URL lists the accepted messages (filtered by `To` and
`From`, newest first) the way twilio-python reads them.

Faults, for the fault-injection tests (`tests/test_faults.py`):

- `faults` (the next requests, whoever they are for) and `script` (the next
  requests to one number) hold scripted answers: an `(http status, error code)`
  pair, or one of the `Fault` kinds: the connection dropped before the message
  was accepted, accepted and then the connection dropped, or accepted and the
  answer held until the client has given up.
- `on_accept(message)` runs after a message is accepted and before the answer
  goes back: a test can hold the answer there and kill the worker in between.
  `on_request(message)` does the same for every send request, accepted or not.
- `callbacks`: statuses posted, signed with `auth_token`, to each accepted
  message's StatusCallback URL, like Twilio's status callbacks.
- `list_fault`: an `(http status, error code)` answer to every list request;
  `list_hides_messages` makes the list come back empty (a list that lags).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests
from twilio.request_validator import RequestValidator


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many senders at once must not find the door shut


class Fault(Enum):
    """Network faults a send request can meet."""

    RESET = "reset"  # the connection drops before Twilio accepted anything
    ACCEPT_THEN_RESET = "accept_then_reset"  # Twilio accepted; the answer is lost
    ACCEPT_THEN_HANG = "accept_then_hang"  # Twilio accepted; the answer comes too late


@dataclass
class ReceivedMessage:
    """One send request as the fake received it."""

    at: float  # when the answer went back (after the simulated latency)
    account_sid: str
    form: dict[str, str]
    sid: str | None  # set when the fake accepted the message (whatever the client heard)
    auth_header: str | None
    arrived: float = 0.0  # when the request reached the fake
    fault: str | None = None  # the scripted fault this request met, if any


@dataclass
class FakeTwilio:
    """Start with `start()`; `base_url` goes into TWILIO_API_BASE_URL."""

    latency: float = 0.0
    # Scripted answers for the next requests: (http status, twilio error code) pairs or Faults.
    faults: list = field(default_factory=list)
    # Scripted answers for the next requests to one number, taken before `faults`.
    script: dict[str, list] = field(default_factory=dict)
    received: list[ReceivedMessage] = field(default_factory=list)
    on_accept: Callable[[ReceivedMessage], None] | None = None
    on_request: Callable[[ReceivedMessage], None] | None = None
    callbacks: list[str] = field(default_factory=list)
    auth_token: str | None = None
    list_fault: tuple[int, int | None] | None = None
    list_hides_messages: bool = False
    hang_seconds: float = 3.0
    list_requests: int = 0
    callbacks_posted: list[tuple[str, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):  # keep test output quiet
                pass

            def _messages_path(self) -> list[str] | None:
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "2010-04-01" or parts[3] != "Messages.json":
                    self._answer(404, {"code": 20404, "message": "not found", "status": 404})
                    return None
                return parts

            def do_GET(self):  # noqa: N802 (http.server's naming)
                parts = self._messages_path()
                if parts is None:
                    return
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                with fake._lock:
                    fake.list_requests += 1
                    fault = fake.list_fault
                    found = [
                        m
                        for m in reversed(fake.received)
                        if m.sid
                        and not fake.list_hides_messages
                        and ("To" not in query or m.form.get("To") == query["To"])
                        and ("From" not in query or m.form.get("From") == query["From"])
                    ][: int(query.get("PageSize") or 50)]
                if fault:
                    self._refuse(*fault)
                    return
                self._answer(
                    200,
                    {
                        "messages": [fake._resource(m) for m in found],
                        "first_page_uri": self.path,
                        "next_page_uri": None,
                        "previous_page_uri": None,
                        "page": 0,
                        "page_size": len(found),
                        "start": 0,
                        "end": max(len(found) - 1, 0),
                        "uri": self.path,
                    },
                )

            def do_POST(self):  # noqa: N802 (http.server's naming)
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                parts = self._messages_path()
                if parts is None:
                    return
                if fake.latency:
                    time.sleep(fake.latency)
                with fake._lock:
                    queue = fake.script.get(form.get("To", ""))
                    fault = queue.pop(0) if queue else fake.faults.pop(0) if fake.faults else None
                    accepted = fault is None or fault in (
                        Fault.ACCEPT_THEN_RESET,
                        Fault.ACCEPT_THEN_HANG,
                    )
                    received = ReceivedMessage(
                        time.time(),
                        parts[2],
                        form,
                        "SM" + uuid.uuid4().hex if accepted else None,
                        self.headers.get("Authorization"),
                        arrived,
                        fault=None if fault is None else str(getattr(fault, "value", fault)),
                    )
                    fake.received.append(received)
                if fake.on_request is not None:
                    fake.on_request(received)
                if accepted:
                    fake._post_callbacks(received)
                    if fake.on_accept is not None:
                        fake.on_accept(received)
                if fault is Fault.RESET or fault is Fault.ACCEPT_THEN_RESET:
                    self._reset()
                    return
                if fault is Fault.ACCEPT_THEN_HANG:
                    time.sleep(fake.hang_seconds)
                elif fault is not None:
                    self._refuse(*fault)
                    return
                self._answer(201, fake._resource(received))

            def _refuse(self, status: int, code: int | None) -> None:
                self._answer(
                    status,
                    {"code": code, "message": "fake fault", "more_info": "", "status": status},
                )

            def _reset(self) -> None:
                """Drop the connection with a TCP reset, no answer at all."""
                self.close_connection = True
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client is gone (killed, or gave up waiting)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @staticmethod
    def _resource(message: ReceivedMessage) -> dict:
        form = message.form
        return {
            "sid": message.sid,
            "status": "queued",
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "account_sid": message.account_sid,
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "date_created": formatdate(message.arrived, usegmt=True),
            "date_updated": formatdate(message.arrived, usegmt=True),
            "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}.json",
        }

    def _post_callbacks(self, message: ReceivedMessage) -> None:
        url = message.form.get("StatusCallback")
        if not (self.callbacks and url and self.auth_token):
            return
        validator = RequestValidator(self.auth_token)

        def post_all() -> None:
            for status in self.callbacks:
                params = {
                    "MessageSid": message.sid,
                    "SmsSid": message.sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "AccountSid": message.account_sid,
                    "To": message.form.get("To", ""),
                    "From": message.form.get("From", ""),
                    "ApiVersion": "2010-04-01",
                }
                headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
                answer = 0
                for _ in range(20):  # Twilio retries a callback that fails
                    try:
                        answer = requests.post(url, data=params, headers=headers, timeout=5)
                        answer = answer.status_code
                        if answer == 200:
                            break
                    except requests.RequestException:
                        pass
                    time.sleep(0.25)
                with self._lock:
                    self.callbacks_posted.append((message.sid, status, answer))

        threading.Thread(target=post_all, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def accepted(self) -> list[ReceivedMessage]:
        """Every message the fake accepted (whether or not the client heard so)."""
        with self._lock:
            return [m for m in self.received if m.sid]

    def messages_to(self, phone: str) -> list[ReceivedMessage]:
        with self._lock:
            return [m for m in self.received if m.form.get("To") == phone and m.sid]

    def wait_for(self, predicate, timeout: float = 10.0):
        """Wait until `predicate(self)` is truthy; return its value (or fail the test)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"fake Twilio: condition not met within {timeout}s")
