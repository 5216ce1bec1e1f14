"""gunicorn.conf.py and the Procfile hold the values docs/deployment.md states."""

from __future__ import annotations

import multiprocessing
import runpy

from tests.servers import PROJECT, run_app_script

TWILIO_WEBHOOK_TIMEOUT = 15  # seconds Twilio waits for a webhook before giving up


def load_config(monkeypatch, **env: str) -> dict:
    # Set, then remove: monkeypatch then restores each afterwards, including the metrics
    # directory gunicorn.conf.py puts into os.environ itself.
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(PROJECT / "gunicorn.conf.py"))


def test_defaults_are_what_the_docs_say(monkeypatch):
    config = load_config(monkeypatch)
    assert config["workers"] == multiprocessing.cpu_count()
    assert config["worker_class"] == "gthread"
    assert config["threads"] == 4
    assert config["timeout"] == 10 < TWILIO_WEBHOOK_TIMEOUT
    assert config["graceful_timeout"] == 20 < 30  # a platform's SIGKILL comes after 30 s
    assert config["accesslog"] == "-"
    assert config["logconfig_dict"]["formatters"]["default"]["()"] == "app.logs.JsonLineFormatter"
    config["on_exit"](None)  # removes the metrics directory it made


def test_environment_overrides(monkeypatch, tmp_path):
    config = load_config(
        monkeypatch,
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="8",
        LOG_FORMAT="text",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    assert config["workers"] == 3 and config["threads"] == 8
    assert config["logconfig_dict"]["formatters"]["default"]["()"] == "app.logs.ContextFormatter"
    (tmp_path / "metrics").mkdir()
    stale = tmp_path / "metrics" / "counter_123.db"
    stale.write_bytes(b"old")
    config["on_starting"](None)
    assert not stale.exists()  # an earlier run's counts are not added to this one's
    config["on_exit"](None)
    assert (tmp_path / "metrics").exists()  # the operator's directory is left in place


def test_a_metrics_directory_is_made_when_none_is_configured(monkeypatch):
    import os

    config = load_config(monkeypatch)
    made = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert os.path.isdir(made)
    config["on_exit"](None)
    assert not os.path.exists(made)


def test_procfile_keeps_the_contract_lines():
    lines = (PROJECT / "Procfile").read_text().splitlines()
    assert "release: flask --app app db upgrade" in lines
    assert 'web: gunicorn "app:create_app()"' in lines
    assert "worker: flask --app app worker" in lines
    # One clock process runs every schedule: retention daily, ledger checkpoints hourly.
    assert "clock: flask --app app clock" in lines


def test_each_worker_builds_the_keyword_lexicon_before_it_serves(monkeypatch):
    from app.core import opt_out_lexicon

    config = load_config(monkeypatch)
    monkeypatch.setattr(opt_out_lexicon, "_lexicon", None)
    config["post_worker_init"](None)
    assert opt_out_lexicon._lexicon is not None
    config["on_exit"](None)


# Libraries a worker needs only on rare paths (or never): loaded there, not at start-up,
# because each costs every process its memory (docs/performance.md, "Memory per process").
RARE_PATH_MODULES = {
    "zxcvbn": "a password being chosen (app.access.passwords)",
    "qrcode": "a second factor being enrolled (app.staff.credentials)",
    "simplemma": "only tools/gen_opt_out_forms.py (a dev dependency)",
    "phonenumbers.geocoder": "nothing: places reads its generated table",
}


def test_a_ready_worker_has_not_loaded_what_only_rare_paths_need(tmp_path):
    """What `post_worker_init` leaves a web worker with: the app built and the lexicon warm,
    and none of the libraries above imported; choosing a password then loads zxcvbn."""
    done = run_app_script(
        tmp_path,
        before="import sys\n",
        after=f"""
        from app.core.keywords import warm

        warm()
        print(" ".join(sorted(m for m in {sorted(RARE_PATH_MODULES)!r} if m in sys.modules)))
        from app.access.passwords import PasswordRejected, check_new_password
        try:
            check_new_password("password1234")
        except PasswordRejected:
            pass
        print("zxcvbn" in sys.modules)
        """,
    )
    assert done.returncode == 0, done.stderr
    loaded, zxcvbn_after_a_password = done.stdout.splitlines()[-2:]
    assert loaded == ""
    assert zxcvbn_after_a_password == "True"
