"""Throttling sign-in attempts with growing delays, instead of locking accounts.

A lockout lets anyone who knows a colleague's e-mail lock them out by typing
wrong passwords. Here each failure only makes the next attempt wait longer,
and the wait is counted twice:

- per account *and* client address: after 3 failures, 2 s, then 4, 8, … up to
  5 minutes between attempts. This stops one client guessing one account.
- per account from anywhere: after 10 failures, 2 s, 4, … up to 1 minute.
  This slows guessing spread over many addresses, while the owner, at worst,
  waits a minute for their next try.

The per-address limit on the sign-in form (`STAFF_LOGIN_RATE_LIMIT`,
flask-limiter) caps how fast one address may try across accounts. The counts
live in the rate limiter's storage (`RATELIMIT_STORAGE_URI`): per process with
``memory://``, shared by every process and host with ``redis://``. The account
is keyed by a hash of the typed e-mail, known or not, so the throttle itself
says nothing about which accounts exist. Counts fade an hour after the first
failure, and a successful sign-in clears them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from limits.storage import Storage

FAILURE_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class ThrottleRule:
    """After `free` failures, each one doubles the wait before the next attempt (to `cap`)."""

    name: str
    free: int
    cap_seconds: int

    def delay_after(self, failures: int) -> int:
        if failures <= self.free:
            return 0
        return min(2 ** (failures - self.free), self.cap_seconds)


ACCOUNT_FROM_ADDRESS = ThrottleRule("account-address", free=3, cap_seconds=300)
ACCOUNT = ThrottleRule("account", free=10, cap_seconds=60)
RULES = (ACCOUNT_FROM_ADDRESS, ACCOUNT)


class SignInThrottle:
    """Failure counts and waits for sign-in attempts, in a `limits` storage."""

    def __init__(self, storage: Storage, prefix: str = "scg") -> None:
        self.storage = storage
        self.prefix = prefix

    def _keys(self, email: str, address: str | None) -> list[tuple[ThrottleRule, str]]:
        account = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]
        return [
            (ACCOUNT_FROM_ADDRESS, f"{self.prefix}:signin:{account}:{address or '-'}"),
            (ACCOUNT, f"{self.prefix}:signin:{account}"),
        ]

    def wait_seconds(self, email: str, address: str | None) -> float:
        """How long before this account may be tried again from `address` (0: now)."""
        wait = 0.0
        now = time.time()
        for rule, key in self._keys(email, address):
            failures = self.storage.get(key)
            if rule.delay_after(failures) and self.storage.get(f"{key}:wait:{failures}"):
                wait = max(wait, self.storage.get_expiry(f"{key}:wait:{failures}") - now)
        return max(wait, 0.0)

    def failed(self, email: str, address: str | None) -> None:
        """Count a failed attempt (a wrong password or code) and start the wait it earns."""
        for rule, key in self._keys(email, address):
            failures = self.storage.incr(key, FAILURE_WINDOW_SECONDS)
            delay = rule.delay_after(failures)
            if delay:
                self.storage.incr(f"{key}:wait:{failures}", delay)

    def succeeded(self, email: str, address: str | None) -> None:
        for _rule, key in self._keys(email, address):
            self.storage.clear(key)
