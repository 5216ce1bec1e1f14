"""Benchmark 4: staff and API queries on a large ledger (1,000,000 events over 100,000 numbers).

The ledger is made by `bench.seed` (the service's own decision and sealing
code). Then, against gunicorn: the subscriber lookup API and the subscriber
timeline (p95), the event-log search by date range and by phone (p95), a
streamed CSV export of every event (time and the serving worker's peak RSS), and
`flask --app app ledger verify` of the whole ledger (time, with its progress).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pyotp
import requests
from sqlalchemy import create_engine, pool

from app.access.accounts import (
    create_account,
    needs_second_factor,
    set_password,
    set_second_factor,
)
from app.access.secrets import SeedCipher
from app.access.tokens import create_api_token
from app.store.db import Database, utcnow
from bench.common import (
    BENCH_TOTP_KEY,
    PROJECT,
    app_env,
    fresh_database,
    gunicorn,
    percentile,
    table,
    write_result,
)
from bench.seed import phone_of, seed
from tests.servers import free_port

SAMPLES = 200
# consent checks: BATCHES requests, each of the API's largest batch (1,000 numbers)
BATCHES, BATCH = 20, 1000


BENCH_PASSWORD = "bench quokka marmalade zeppelin"


def _enrolled(session, email: str, role: str) -> tuple[str, str, str | None]:
    """An account as its owner leaves it after the enrolment link: password and second factor."""
    now = utcnow()
    user = create_account(session, email, role, now)
    set_password(user, BENCH_PASSWORD, now)
    seed = pyotp.random_base32() if needs_second_factor(user) else None
    if seed:
        set_second_factor(user, seed, SeedCipher([BENCH_TOTP_KEY]), now, None)
    user.enrolled_at = now
    return email, BENCH_PASSWORD, seed


def _accounts(url: str) -> dict:
    database = Database(url)
    with database.transaction() as session:
        _, token = create_api_token(session, "bench")
        credentials = {
            "viewer": _enrolled(session, "viewer@example.com", "viewer"),
            # Two officers: a code works once, and each server below is signed in to once.
            "compliance": _enrolled(session, "officer@example.com", "compliance"),
            "exporter": _enrolled(session, "exporter@example.com", "compliance"),
            "token": token,
        }
    database.dispose()
    return credentials


def _sign_in(base: str, email: str, password: str, secret: str | None) -> requests.Session:
    session = requests.Session()
    session.headers["Referer"] = base + "/staff/"

    def token(path: str) -> str:
        html = session.get(base + path, timeout=30).text
        return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html).group(1)

    response = session.post(
        base + "/staff/login",
        data={"email": email, "password": password, "csrf_token": token("/staff/login")},
        timeout=30,
    )
    if secret:
        response = session.post(
            base + "/staff/login/code",
            data={"code": pyotp.TOTP(secret).now(), "csrf_token": token("/staff/login/code")},
            timeout=30,
        )
    response.raise_for_status()
    assert "Sign out" in session.get(base + "/staff/", timeout=30).text, "sign-in failed"
    return session


def _timed(session: requests.Session, urls: list[str], **kwargs) -> list[float]:
    """Milliseconds per GET, each checked for 200."""
    timings = []
    for url in urls:
        started = time.perf_counter()
        response = session.get(url, timeout=60, **kwargs)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code}")
        timings.append(elapsed)
    return timings


def _timed_posts(session: requests.Session, url: str, payloads: list[dict]) -> list[float]:
    """Milliseconds per JSON POST, each checked for 200."""
    timings = []
    for payload in payloads:
        started = time.perf_counter()
        response = session.post(url, json=payload, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        timings.append(elapsed)
    return timings


def _summary(timings: list[float]) -> dict:
    return {
        "n": len(timings),
        "p50_ms": percentile(timings, 50),
        "p95_ms": percentile(timings, 95),
        "max_ms": max(timings),
    }


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set (or, with VmHWM, its peak so far), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run(pg_admin_url: str, quick: bool, backend: str = "postgresql") -> dict:
    events, numbers = (100_000, 10_000) if quick else (1_000_000, 100_000)
    rng = random.Random(5)
    results: dict = {"events": events, "numbers": numbers, "backend": backend}
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        fresh_database(backend, pg_admin_url, "scale") as database,
    ):
        workdir = Path(tmp)
        print(f"seeding {events:,} events over {numbers:,} numbers …", flush=True)
        results["seed"] = seed(database.url, events, numbers)
        credentials = _accounts(database.url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # requests keeps Secure cookies for HTTPS; this local run is plain HTTP.
        env = app_env(database.url, base, STAFF_COOKIE_SECURE="false", LOG_LEVEL="WARNING")
        with gunicorn("app:create_app()", env, port, workdir / "scale.log"):
            api = requests.Session()
            api.headers["Authorization"] = f"Bearer {credentials['token']}"
            viewer = _sign_in(base, *credentials["viewer"])
            officer = _sign_in(base, *credentials["compliance"])  # viewers search no numbers
            phones = [phone_of(rng.randrange(numbers)) for _ in range(SAMPLES)]
            ids = [rng.randrange(1, numbers + 1) for _ in range(SAMPLES)]
            _timed(api, [f"{base}/api/v1/subscribers/{p}" for p in phones[:20]])  # warm up
            results["subscriber_api"] = _summary(
                _timed(api, [f"{base}/api/v1/subscribers/{p}" for p in phones])
            )
            batches = [
                {
                    "program": "demo",
                    "phones": [phone_of(rng.randrange(numbers)) for _ in range(BATCH)],
                }
                for _ in range(BATCHES)
            ]
            _timed_posts(api, f"{base}/api/v1/consent-checks", batches[:2])  # warm up
            results["consent_checks_batch"] = _summary(
                _timed_posts(api, f"{base}/api/v1/consent-checks", batches)
            )
            results["timeline"] = _summary(
                _timed(viewer, [f"{base}/staff/subscribers/{i}" for i in ids])
            )
            today = date.today()
            ranges = []
            for _ in range(SAMPLES // 2):
                start = today - timedelta(days=rng.randrange(1, 90))
                ranges.append((start, start + timedelta(days=rng.randrange(0, 7))))
            results["search_date_range"] = _summary(
                _timed(viewer, [f"{base}/staff/events?since={a}&until={b}" for a, b in ranges])
            )
            results["search_phone"] = _summary(
                _timed(
                    officer,
                    [f"{base}/staff/events?phone={p.replace('+', '%2B')}" for p in phones[:100]],
                )
            )
        # The export runs on a worker of its own, so its peak RSS is the export's.
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = app_env(database.url, base, STAFF_COOKIE_SECURE="false", LOG_LEVEL="WARNING")
        with gunicorn("app:create_app()", env, port, workdir / "export.log", workers=1) as web:
            officer = _sign_in(base, *credentials["exporter"])
            worker_pid = int(
                subprocess.run(
                    ["pgrep", "-P", str(web.pid)], capture_output=True, text=True
                ).stdout.split()[0]
            )
            rss_before = _rss_kb(worker_pid)
            sampled: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    sampled.append(_rss_kb(worker_pid))
                    done.wait(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            size = rows = 0
            try:
                with officer.get(f"{base}/staff/events/export.csv", stream=True, timeout=900) as r:
                    r.raise_for_status()
                    for chunk in r.iter_content(1 << 16):
                        size += len(chunk)
                        rows += chunk.count(b"\n")
            finally:
                done.set()
                sampler.join()
            results["export_csv"] = {
                "seconds": round(time.perf_counter() - started, 1),
                "bytes": size,
                "lines": rows,
                "worker_peak_rss_mb": round(max(sampled) / 1024, 1),
                "worker_rss_before_mb": round(rss_before / 1024, 1),
                "worker_lifetime_peak_rss_mb": round(_rss_kb(worker_pid, "VmHWM") / 1024, 1),
            }
        verify_env = app_env(database.url, "http://127.0.0.1:9", LOG_LEVEL="WARNING")
        started = time.perf_counter()
        out, err = workdir / "verify.out", workdir / "verify.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            verify = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "app", "ledger", "verify"],
                cwd=PROJECT,
                env=verify_env,
                stdout=stdout,
                stderr=stderr,
            )
            # Its own peak RSS: VmHWM read while it runs (it starts afresh at exec; the
            # rusage of a child would count the pages of this big process it forked from).
            peak_kb = 0
            while verify.poll() is None:
                try:
                    peak_kb = max(peak_kb, _rss_kb(verify.pid, "VmHWM"))
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
        results["ledger_verify"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "exit_code": verify.returncode,
            "output": out.read_text().strip(),
            "progress_lines": err.read_text().count("verified"),
            "peak_rss_mb": round(peak_kb / 1024, 1),
        }
        engine = create_engine(database.url, poolclass=pool.NullPool)
        engine.dispose()

    rows = [
        (
            "subscriber lookup API",
            "p95",
            f"{results['subscriber_api']['p95_ms']:.1f} ms",
            "≤ 50 ms",
        ),
        (
            f"consent checks, {BATCH:,} numbers per request",
            "p95",
            f"{results['consent_checks_batch']['p95_ms']:.1f} ms",
            "≤ 500 ms (ours)",
        ),
        ("subscriber timeline", "p95", f"{results['timeline']['p95_ms']:.1f} ms", "≤ 50 ms"),
        (
            "event search, date range",
            "p95",
            f"{results['search_date_range']['p95_ms']:.1f} ms",
            "≤ 200 ms",
        ),
        ("event search, phone", "p95", f"{results['search_phone']['p95_ms']:.1f} ms", "≤ 200 ms"),
        (
            "CSV export, all events",
            "time / worker peak RSS",
            f"{results['export_csv']['seconds']} s / "
            f"{results['export_csv']['worker_peak_rss_mb']} MB",
            "streamed, ≤ 150 MB",
        ),
        (
            "ledger verify",
            "time",
            f"{results['ledger_verify']['seconds']} s "
            f"(exit {results['ledger_verify']['exit_code']})",
            "≤ 60 s",
        ),
    ]
    results["table"] = table(
        f"Queries at scale ({backend}, {events:,} events over {numbers:,} numbers)",
        rows,
        ("measure", "statistic", "measured", "target"),
    )
    write_result("scale", results)
    return results
