"""Sign-in throttling (app.access.throttle): growing delays, per account and address, shared
through RATELIMIT_STORAGE_URI."""

from __future__ import annotations

import os
import secrets
import socket

import pytest
from limits.storage import MemoryStorage

from app.access.throttle import ACCOUNT, ACCOUNT_FROM_ADDRESS, SignInThrottle
from tests.conftest import make_test_app
from tests.staff_helpers import https_client, make_staff, page_csrf

REDIS_URI = "redis://127.0.0.1:6379"


def test_delays_grow_after_a_few_free_failures_and_stop_at_a_cap():
    assert [ACCOUNT_FROM_ADDRESS.delay_after(n) for n in range(1, 8)] == [0, 0, 0, 2, 4, 8, 16]
    assert ACCOUNT_FROM_ADDRESS.delay_after(100) == 300
    assert [ACCOUNT.delay_after(n) for n in (10, 11, 12)] == [0, 2, 4]
    assert ACCOUNT.delay_after(100) == 60


def test_failures_earn_waits_per_account_and_address_and_success_clears_them():
    throttle = SignInThrottle(MemoryStorage())
    for _ in range(3):
        throttle.failed("a@example.com", "203.0.113.9")
    assert throttle.wait_seconds("a@example.com", "203.0.113.9") == 0
    throttle.failed("a@example.com", "203.0.113.9")
    assert 1 < throttle.wait_seconds("A@Example.com ", "203.0.113.9") <= 2
    assert throttle.wait_seconds("a@example.com", "198.51.100.7") == 0  # the owner elsewhere
    assert throttle.wait_seconds("b@example.com", "203.0.113.9") == 0
    throttle.succeeded("a@example.com", "203.0.113.9")
    throttle.failed("a@example.com", "203.0.113.9")
    assert throttle.wait_seconds("a@example.com", "203.0.113.9") == 0


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_with_redis_the_limits_hold_across_processes(database_url, tmp_path):
    """Two web processes (two apps, each with its own storage connection) share one count."""
    if not redis_answers():
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but Redis does not answer on 127.0.0.1:6379")
        pytest.skip("no Redis on 127.0.0.1:6379 (CI requires it)")
    prefix = f"scg-test-{secrets.token_hex(6)}"  # this run's own keys on a shared Redis
    settings = {
        "ratelimit_storage_uri": REDIS_URI,
        "ratelimit_key_prefix": prefix,
        "staff_login_rate_limit": "6 per minute",
    }
    one = make_test_app(database_url, tmp_path, **settings)
    two = make_test_app(database_url, tmp_path, **settings)
    officer = make_staff(one.extensions["db"], "viewer", app=one)

    def attempt(app, password, address="203.0.113.9", email=officer.email):
        client = https_client(app)
        token = page_csrf(client, "/staff/login")
        return client.post(
            "/staff/login",
            data={"email": email, "password": password, "csrf_token": token},
            environ_base={"REMOTE_ADDR": address},
        ).status_code

    assert [attempt(one, "wrong") for _ in range(4)] == [401, 401, 401, 401]
    assert attempt(two, officer.password) == 429  # the other process knows the failures
    # The per-address limit is shared too: 6 sign-in posts a minute from one address, in all.
    assert [attempt(one, "x", "192.0.2.1", f"u{i}@example.com") for i in range(3)] == [401] * 3
    assert [attempt(two, "x", "192.0.2.1", f"v{i}@example.com") for i in range(4)] == [
        401,
        401,
        401,
        429,
    ]
    # Control: with per-process memory, the second process would not have known.
    alone = make_test_app(database_url, tmp_path, ratelimit_storage_uri="memory://")
    assert attempt(alone, officer.password) == 302
    for app in (one, two, alone):
        app.extensions["db"].dispose()
