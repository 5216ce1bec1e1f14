"""The clock process (`flask --app app clock`, the Procfile's `clock:`): periodic jobs in one loop.

Each job runs once at start, then every `every` seconds after its last run ended,
until SIGTERM. A job that fails is logged and tried again at its next turn: one
unreachable timestamp authority must not stop retention, nor the reverse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


class Stop(Protocol):
    """What the loop needs of a stop flag (`app.outbox.worker.StopFlag`)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


@dataclass
class Job:
    """One periodic task of the clock."""

    name: str
    every_seconds: float
    run: Callable[[], None]
    next_at: float = 0.0


def run_clock(jobs: list[Job], stop: Stop, *, now: Callable[[], float] = time.monotonic) -> None:
    """Run `jobs` on their schedules until `stop` is set; the job in hand finishes first."""
    for job in jobs:
        job.next_at = now()
    while not stop.is_set():
        for job in jobs:
            if stop.is_set():
                return
            if job.next_at <= now():
                try:
                    job.run()
                except Exception:
                    logger.exception(
                        "clock job %s failed; it runs again in %.0f s",
                        job.name,
                        job.every_seconds,
                        extra={"job": job.name},
                    )
                job.next_at = now() + job.every_seconds
        if stop.wait(max(0.0, min(job.next_at for job in jobs) - now())):
            return
