"""Real processes for the end-to-end tests: gunicorn and the sender worker, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.twilio_helpers import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, base_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test deployment: this database, the test Twilio credentials."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "DATABASE_", "SMS_"))
    }
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "e2e-secret",
        "SMS_BACKEND": "console",
        "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
        "PUBLIC_BASE_URL": base_url,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        # Required outside console mode (tests that switch to SMS_BACKEND=twilio).
        "SUPPRESSION_KEY": "e2e-suppression-key",
        "TOTP_ENCRYPTION_KEY": "ZTJlLXRvdHAta2V5LXRoaXJ0eS10d28tYnl0ZXMhISE=",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(*processes: subprocess.Popen) -> None:
    """SIGTERM, then wait (kill after 15 s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def gunicorn(env: dict[str, str], port: int, log: Path, *args: str):
    """gunicorn serving the app until the block ends; fails with its log if it does not start."""
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *args]
    web = start([*command, "app:create_app()"], env, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or web.poll() is not None:
                raise AssertionError(f"gunicorn did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield web
    finally:
        stop(web)


def sender_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`flask --app app worker` as its own process, returned once it is sending."""
    worker = start([sys.executable, "-m", "flask", "--app", "app", "worker"], env, log)
    deadline = time.monotonic() + 30
    while "sending through" not in log.read_text():
        if time.monotonic() > deadline or worker.poll() is not None:
            raise AssertionError(f"the worker did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return worker


def refusing_imports(*prefixes: str) -> str:
    """Python source that makes every later import of a module under `prefixes` fail, for a
    script run with `run_app_script` or on its own: it shows what the service never needs."""
    return textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith({prefixes!r}):
                    raise ImportError("refused: " + name)
                return None

        sys.meta_path.insert(0, Refuse())
        """
    )


def run_app_script(tmp_path: Path, before: str, after: str) -> subprocess.CompletedProcess:
    """Run Python in a fresh process: `before`, then a test app built on a SQLite file under
    `tmp_path` (as `application`), then `after`. For what only a new process shows: which
    modules building the app imports, or that it builds with some import refused."""
    build = textwrap.dedent(
        f"""
        from pathlib import Path
        from app import create_app

        application = create_app({{
            "env": {{}},
            "testing": True,
            "database_url": "sqlite:///{tmp_path}/app.sqlite3",
            "instance_dir": Path("{tmp_path}/instance"),
            "secret_key": "test-secret-key",
            "sms_backend": "console",
        }})
        """
    )
    script = textwrap.dedent(before) + build + textwrap.dedent(after)
    script += '\napplication.extensions["db"].dispose()\n'
    return subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
