"""Benchmark 5: the transparency log over a 1,000,000-event ledger (100,000 in --quick).

The ledger is made by `bench.seed` on PostgreSQL. Then, each as its own
`flask --app app …` process, timed end to end with its peak RSS (VmHWM):

1. the first `ledger checkpoint`, over every event (target ≤ 30 s, ≤ 200 MB);
2. an incremental `ledger checkpoint` after 5,000 more events, appended through
   the ledger's own code (target ≤ 1 s: the command's own figure, printed as
   "in X s", and the whole process with its start-up);
3. `ledger verify` of the whole ledger, which now also rebuilds the tree and
   checks both published checkpoints with consistency proofs (target ≤ 60 s);
4. an evidence bundle with inclusion proofs for one number (`evidence PHONE`).
"""

from __future__ import annotations

import base64
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.core.ledger_hashing import NewEvent
from app.ledger.chain import append_event, lock_subscriber
from app.store.db import Database, utcnow
from bench.common import PROJECT, app_env, fresh_database, table, write_result
from bench.seed import phone_of, seed

APPENDED = 5_000
BENCH_KEY = base64.b64encode(bytes(range(32))).decode()  # a fixed demo key, never a real one


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(args: list[str], env: dict[str, str], workdir: Path, name: str) -> dict:
    """Run `flask --app app ARGS` as a process: seconds, peak RSS, exit code and output."""
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=PROJECT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, _peak_rss_kb(process.pid))
            time.sleep(0.02)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": round(seconds, 2),
        # CPU time of the process itself: on a shared machine, less disturbed than wall time
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak / 1024, 1),
        "exit_code": process.returncode,
        "output": out.read_text().strip()[-2000:],
        "errors": err.read_text().strip()[-2000:],
    }


def append_events(url: str, count: int, numbers: int) -> float:
    """`count` more events from existing numbers, through the ledger's own append."""
    database = Database(url)
    started = time.perf_counter()
    with database.transaction() as session:
        for n in range(count):
            subscriber = lock_subscriber(session, phone_of(n * 7919 % numbers))
            append_event(session, subscriber, NewEvent("inbound_text", utcnow(), "other"))
    database.dispose()
    return time.perf_counter() - started


def _inner_seconds(output: str) -> float | None:
    match = re.search(r" in ([0-9.]+)s", output)
    return float(match.group(1)) if match else None


def run(pg_admin_url: str, quick: bool) -> dict:
    events, numbers = (100_000, 10_000) if quick else (1_000_000, 100_000)
    results: dict = {"events": events, "numbers": numbers, "backend": "postgresql"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-translog-") as tmp,
        fresh_database("postgresql", pg_admin_url, "translog") as database,
    ):
        workdir = Path(tmp)
        print(f"seeding {events:,} events over {numbers:,} numbers …", flush=True)
        results["seed"] = seed(database.url, events, numbers)
        env = app_env(
            database.url,
            "http://127.0.0.1:9",
            LOG_LEVEL="WARNING",
            INSTANCE_DIR=str(workdir / "instance"),
            LEDGER_SIGNING_KEY=BENCH_KEY,
            LEDGER_CHECKPOINT_DIR=str(workdir / "checkpoints"),
        )
        print("first checkpoint …", flush=True)
        first = measured(["ledger", "checkpoint"], env, workdir, "first")
        first["checkpoint_seconds"] = _inner_seconds(first["output"])
        results["first_checkpoint"] = first
        print(f"appending {APPENDED:,} events …", flush=True)
        results["append_seconds"] = round(append_events(database.url, APPENDED, numbers), 1)
        print("incremental checkpoint …", flush=True)
        incremental = measured(["ledger", "checkpoint"], env, workdir, "incremental")
        incremental["checkpoint_seconds"] = _inner_seconds(incremental["output"])
        results["incremental_checkpoint"] = incremental
        print("ledger verify …", flush=True)
        results["verify"] = measured(["ledger", "verify", "--quiet"], env, workdir, "verify")
        print("evidence bundle …", flush=True)
        results["evidence"] = measured(
            ["evidence", phone_of(1), "--no-checkpoint", "--output", str(workdir / "b.json")],
            env,
            workdir,
            "evidence",
        )
    first, incremental = results["first_checkpoint"], results["incremental_checkpoint"]
    verify, evidence = results["verify"], results["evidence"]
    rows = [
        (
            f"first checkpoint, {events:,} events",
            "time / peak RSS (process)",
            f"{first['seconds']} s / {first['peak_rss_mb']} MB (exit {first['exit_code']}; "
            f"checkpoint itself {first['checkpoint_seconds']} s)",
            "≤ 30 s, ≤ 200 MB",
        ),
        (
            f"incremental checkpoint, +{APPENDED:,} events",
            "checkpoint / whole process",
            f"{incremental['checkpoint_seconds']} s / {incremental['seconds']} s "
            f"(exit {incremental['exit_code']}, {incremental['peak_rss_mb']} MB)",
            "≤ 1 s",
        ),
        (
            "ledger verify with consistency checks",
            "time (CPU) / peak RSS",
            f"{verify['seconds']} s ({verify['cpu_seconds']} s CPU) / {verify['peak_rss_mb']} MB "
            f"(exit {verify['exit_code']})",
            "≤ 60 s",
        ),
        (
            "evidence bundle with inclusion proofs, one number",
            "time (process)",
            f"{evidence['seconds']} s (exit {evidence['exit_code']})",
            "—",
        ),
    ]
    results["table"] = table(
        f"Transparency log (postgresql, {events:,} events over {numbers:,} numbers)",
        rows,
        ("measure", "statistic", "measured", "target"),
    )
    write_result("transparency", results)
    return results
