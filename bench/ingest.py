"""Benchmark 1: webhook ingest under gunicorn, against a bare Flask endpoint as the ceiling.

For each backend (SQLite in WAL mode, PostgreSQL): a fresh database; the bare
endpoint and then the service, each under the repo's gunicorn settings (as
many workers as cores); each driven by `bench/loadgen` (compiled, one request
per connection, like Twilio) first at peak (closed loop), then open loop at half
of the service's peak. Every request is a distinct, correctly signed webhook
(JOIN / YES / STOP / HELP / other over many numbers). Afterwards the ledger must
hold exactly one event per accepted MessageSid.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import create_engine, func, pool, select

from bench.common import (
    AUTH_TOKEN,
    app_env,
    cores,
    fresh_database,
    gunicorn,
    loadgen,
    table,
    write_result,
)
from bench.webhooks import write_requests
from tests.servers import free_port

CONNECTIONS = 32


def _drive(port: int, workdir: Path, tag: str, *, peak_s: float, warmup_s: float, seed: int):
    """Warm up, find the peak, then run at half of it; returns (peak, half, accepted)."""
    base = f"http://127.0.0.1:{port}"
    # More requests than even the bare endpoint can take in the time (each is used once).
    counts = {"warmup": 8000 * warmup_s, "peak": 8000 * peak_s, "half": 4500 * peak_s}
    files = {}
    for offset, (step, count) in enumerate(counts.items()):
        files[step] = workdir / f"{tag}-{step}.bin"
        write_requests(
            files[step],
            count=int(count),
            base_url=base,
            auth_token=AUTH_TOKEN,
            numbers=50_000,
            seed=seed * 10 + offset,
        )
    warm = loadgen(port, files["warmup"], rate=0, duration=warmup_s, connections=CONNECTIONS)
    peak = loadgen(port, files["peak"], rate=0, duration=peak_s, connections=CONNECTIONS)
    half_rate = max(1.0, peak["requests_per_s"] / 2)
    half = loadgen(port, files["half"], rate=half_rate, duration=peak_s, connections=CONNECTIONS)
    accepted = warm["ok"] + peak["ok"] + half["ok"]
    return peak, half, accepted


def run(backends: list[str], pg_admin_url: str, quick: bool) -> dict:
    peak_s, warmup_s = (5.0, 2.0) if quick else (20.0, 5.0)
    results: dict = {"settings": {"peak_s": peak_s, "workers": cores(), "loadgen": "bench/loadgen"}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            with fresh_database(backend, pg_admin_url, "ingest") as database:
                port = free_port()
                env = app_env(database.url, f"http://127.0.0.1:{port}")
                with gunicorn("bench.bare_app:create_app()", env, port, workdir / "bare.log"):
                    bare_peak, bare_half, _ = _drive(
                        port, workdir, "bare", peak_s=peak_s, warmup_s=warmup_s, seed=11
                    )
                port = free_port()
                env = app_env(database.url, f"http://127.0.0.1:{port}")
                with gunicorn("app:create_app()", env, port, workdir / "app.log"):
                    app_peak, app_half, accepted = _drive(
                        port, workdir, "app", peak_s=peak_s, warmup_s=warmup_s, seed=23
                    )
                engine = create_engine(database.url, poolclass=pool.NullPool)
                with engine.connect() as connection:
                    from app.store.models import ConsentEvent

                    events = connection.execute(select(func.count(ConsentEvent.id))).scalar_one()
                    distinct_sids = connection.execute(
                        select(func.count(func.distinct(ConsentEvent.message_sid)))
                    ).scalar_one()
                engine.dispose()
            ratio = app_peak["requests_per_s"] / bare_peak["requests_per_s"]
            results[backend] = {
                "bare": {"peak": bare_peak, "half": bare_half},
                "app": {"peak": app_peak, "half": app_half},
                "ratio_to_bare": ratio,
                "accepted_requests": accepted,
                "ledger_events": events,
                "distinct_message_sids": distinct_sids,
                "lost_or_duplicated": abs(accepted - events) + (events - distinct_sids),
            }
            for label, peak, half in (
                ("bare Flask", bare_peak, bare_half),
                ("service", app_peak, app_half),
            ):
                rows.append(
                    (
                        backend,
                        label,
                        f"{peak['requests_per_s']:.0f}",
                        f"{peak['latency_ms']['p50']:.1f} / {peak['latency_ms']['p99']:.1f}",
                        f"{half['requests_per_s']:.0f}",
                        f"{half['latency_ms']['p50']:.1f} / {half['latency_ms']['p99']:.1f}",
                        peak["non_2xx"] + half["non_2xx"],
                    )
                )
            rows.append(
                (
                    backend,
                    "ratio / ledger check",
                    f"{ratio:.2f}",
                    "",
                    "",
                    f"{events} events for {accepted} accepted",
                    results[backend]["lost_or_duplicated"],
                )
            )
    results["table"] = table(
        f"Webhook ingest (gunicorn, {cores()} workers; loadgen, {CONNECTIONS} connections)",
        rows,
        (
            "backend",
            "endpoint",
            "peak req/s",
            "peak p50 / p99 ms",
            "half-peak req/s",
            "half-peak p50 / p99 ms",
            "non-2xx (lost/dup)",
        ),
    )
    write_result("ingest", results)
    return results
