"""A local fake of Twilio's Messages API, for end-to-end tests (TWILIO_API_BASE_URL).

It accepts `POST /2010-04-01/Accounts/<sid>/Messages.json` like Twilio does,
records each request with the time it arrived, and answers with a Twilio-shaped
201. Latency and scripted faults are configurable per instance.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many senders at once must not find the door shut


@dataclass
class ReceivedMessage:
    """One send request as the fake received it."""

    at: float  # when the answer went back (after the simulated latency)
    account_sid: str
    form: dict[str, str]
    sid: str | None
    auth_header: str | None
    arrived: float = 0.0  # when the request reached the fake


@dataclass
class FakeTwilio:
    """Start with `start()`; `base_url` goes into TWILIO_API_BASE_URL."""

    latency: float = 0.0
    # Scripted answers for the next requests: (http status, twilio error code) pairs.
    faults: list[tuple[int, int | None]] = field(default_factory=list)
    received: list[ReceivedMessage] = field(default_factory=list)

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

            def do_POST(self):  # noqa: N802 (http.server's naming)
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                parts = self.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "2010-04-01" or parts[3] != "Messages.json":
                    self._answer(404, {"code": 20404, "message": "not found", "status": 404})
                    return
                if fake.latency:
                    time.sleep(fake.latency)
                with fake._lock:
                    fault = fake.faults.pop(0) if fake.faults else None
                    sid = None if fault else "SM" + uuid.uuid4().hex
                    fake.received.append(
                        ReceivedMessage(
                            time.time(),
                            parts[2],
                            form,
                            sid,
                            self.headers.get("Authorization"),
                            arrived,
                        )
                    )
                if fault:
                    status, code = fault
                    self._answer(
                        status,
                        {"code": code, "message": "fake fault", "more_info": "", "status": status},
                    )
                    return
                self._answer(
                    201,
                    {
                        "sid": sid,
                        "status": "queued",
                        "to": form.get("To"),
                        "from": form.get("From"),
                        "body": form.get("Body"),
                        "messaging_service_sid": form.get("MessagingServiceSid"),
                        "account_sid": parts[2],
                        "num_segments": "1",
                        "direction": "outbound-api",
                        "api_version": "2010-04-01",
                        "error_code": None,
                        "error_message": None,
                        "date_created": None,
                        "date_updated": None,
                        "date_sent": None,
                        "uri": f"/2010-04-01/Accounts/{parts[2]}/Messages/{sid}.json",
                    },
                )

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

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
