"""Shared pieces of the benchmark suite: servers, databases, results, the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import create_engine, pool, text

from tests.servers import stop

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "bench" / "results"
LOADGEN = PROJECT / "bench" / "loadgen" / "target" / "release" / "loadgen"
AUTH_TOKEN = "bench-auth-token"
ACCOUNT_SID = "AC" + "b" * 32
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def cores() -> int:
    return os.cpu_count() or 1


@dataclass
class Database:
    """A fresh, migrated database for one benchmark."""

    url: str
    backend: str


@contextmanager
def fresh_database(backend: str, pg_admin_url: str, name: str):
    """A new SQLite file or PostgreSQL database, migrated, dropped afterwards."""
    from app.store.migrate import upgrade

    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix=f"bench-{name}-")
        url = f"sqlite:///{folder}/bench.sqlite3"
        upgrade(url)
        try:
            yield Database(url, "sqlite")
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{folder}/bench.sqlite3{suffix}").unlink(missing_ok=True)
        return
    admin = create_engine(pg_admin_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    database = f"bench_{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + database
    upgrade(url)
    try:
        yield Database(url, "postgresql")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


# Fixed keys for benchmark runs (the accounts are made before the server starts).
BENCH_TOTP_KEY = "YmVuY2gtdG90cC1rZXktMzItYnl0ZXMtbG9uZyEhISE="
BENCH_SUPPRESSION_KEY = "bench-suppression-key"


def app_env(database_url: str, base_url: str, **extra: str) -> dict[str, str]:
    """The service's environment for a benchmark run (console backend unless told otherwise)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "DATABASE_", "SMS_", "SENDER_", "PUBLIC_"))
    }
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY="bench-secret",
        SMS_BACKEND="console",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        PUBLIC_BASE_URL=base_url,
        TOTP_ENCRYPTION_KEY=BENCH_TOTP_KEY,
        SUPPRESSION_KEY=BENCH_SUPPRESSION_KEY,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


GUNICORN_SETTINGS = ["--config", str(PROJECT / "gunicorn.conf.py")]


@contextmanager
def gunicorn(
    app: str,
    env: dict[str, str],
    port: int,
    log: Path,
    workers: int | None = None,
    config: Path | None = None,
):
    """gunicorn with the repo's gunicorn.conf.py (a worker per core), or `config`, until the
    block ends."""
    settings = ["--config", str(config)] if config else GUNICORN_SETTINGS
    command = [sys.executable, "-m", "gunicorn", *settings, "--bind", f"127.0.0.1:{port}"]
    if workers:
        command += ["--workers", str(workers)]
    command.append(app)
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log)
        yield process
    finally:
        stop(process)


def wait_until_up(base: str, process: subprocess.Popen, log: Path, path: str = "/") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            requests.get(base + path, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")


def loadgen(
    port: int, requests_file: Path, *, rate: float, duration: float, connections: int
) -> dict:
    """Run the compiled load generator and return its JSON summary."""
    result = subprocess.run(
        [
            str(LOADGEN),
            "--target",
            f"127.0.0.1:{port}",
            "--requests",
            str(requests_file),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def machine() -> dict:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = {"python": platform.python_version()}
    for package in ("flask", "sqlalchemy", "psycopg", "gunicorn", "twilio"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - informational only
            pass
    try:
        versions["postgresql"] = subprocess.run(
            ["psql", "--version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "cpu": model,
        "cores": cores(),
        "memory": memory,
        "os": platform.platform(),
        "versions": versions,
    }


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def table(title: str, rows: list[tuple], headers: tuple) -> str:
    """A Markdown table, printed and returned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]

    def line(cells):
        return (
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"
        )

    out = [f"\n### {title}\n", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    text_ = "\n".join(out)
    print(text_, flush=True)
    return text_


def per_backend(
    name: str,
    backends,
    results: dict,
    measure,
    row,
    title: str,
    headers: tuple,
) -> dict:
    """Run `measure(backend, workdir)` for each backend, keep each result in `results`
    under the backend's name, print and keep a table of `row(backend, measured)`, write
    `bench/results/<name>.json`, and return `results`."""
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        for backend in backends:
            measured = measure(backend, Path(tmp))
            results[backend] = measured
            rows.append(row(backend, measured))
    results["table"] = table(title, rows, headers)
    write_result(name, results)
    return results
