"""Settings (app.config) and app creation: read once, fail fast at start."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import ConfigError, Settings

TWILIO = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "token"}
KEYS = {
    "SUPPRESSION_KEY": "a-suppression-key-of-some-length",
    "TOTP_ENCRYPTION_KEY": "wt8Ii0Z0cqkqOQv1I7rN1cY4xVJtNRM3H2oK8xYcM2Q=",
}


def test_defaults_without_twilio_are_the_console_demo(tmp_path):
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path)}, {"testing": True})
    assert settings.sms_backend == "console"
    assert settings.sender_mps == 10.0
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.database_url == f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    assert settings.programs_file.name == "demo.toml"


def test_twilio_backend_when_an_account_sid_is_set():
    settings = Settings.from_env({**TWILIO, **KEYS, "SECRET_KEY": "s"})
    assert settings.sms_backend == "twilio"
    assert settings.auth_tokens == ["token"]


def test_previous_token_is_accepted_too():
    settings = Settings.from_env(
        {**TWILIO, **KEYS, "SECRET_KEY": "s", "TWILIO_AUTH_TOKEN_PREVIOUS": "old"}
    )
    assert settings.auth_tokens == ["token", "old"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**TWILIO}, "SECRET_KEY is required"),
        ({"TWILIO_ACCOUNT_SID": "AC1", "SECRET_KEY": "s"}, "TWILIO_AUTH_TOKEN"),
        ({"SMS_BACKEND": "carrier-pigeon"}, "SMS_BACKEND"),
        ({"SENDER_MPS": "fast"}, "SENDER_MPS must be a number"),
        ({"SENDER_MPS": "0"}, "SENDER_MPS must be greater than zero"),
        ({"SENDER_THREADS": "0"}, "SENDER_THREADS"),
        ({"PUBLIC_BASE_URL": "gateway.example.com"}, "PUBLIC_BASE_URL"),
        ({"PROXY_FIX_X_FOR": "one"}, "whole number"),
        ({**TWILIO, "SECRET_KEY": "s"}, "SUPPRESSION_KEY is required outside console mode"),
        (
            {**TWILIO, "SECRET_KEY": "s", "SUPPRESSION_KEY": "k"},
            "TOTP_ENCRYPTION_KEY is required outside console mode",
        ),
        ({**KEYS, "TOTP_ENCRYPTION_KEY": "short"}, "TOTP_ENCRYPTION_KEY must be 32 bytes"),
        ({"TOTP_ENCRYPTION_KEY_PREVIOUS": "x"}, "TOTP_ENCRYPTION_KEY_PREVIOUS must be 32"),
    ],
)
def test_bad_settings_fail_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/x", "postgresql+psycopg://u:p@db:5432/x"),
        ("postgresql://u@db/x", "postgresql+psycopg://u@db/x"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg://u@db/x"),
    ],
)
def test_heroku_style_database_urls_get_a_driver(given, expected):
    assert Settings.from_env({"DATABASE_URL": given}, {"testing": True}).database_url == expected


def test_public_base_url_loses_its_trailing_slash():
    settings = Settings.from_env({"PUBLIC_BASE_URL": "https://gw.example.com/"}, {"testing": True})
    assert settings.public_base_url == "https://gw.example.com"


def test_an_unusable_programs_file_stops_the_app_at_start(tmp_path):
    bad = tmp_path / "programs.toml"
    bad.write_text('[[programs]]\nid = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="missing brand"):
        create_app(
            {
                "env": {},
                "testing": True,
                "instance_dir": tmp_path,
                "programs_file": bad,
                "database_url": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            }
        )


def test_console_demo_keeps_its_generated_secrets_in_the_instance_folder(tmp_path):
    config = {"env": {"INSTANCE_DIR": str(tmp_path)}}
    first = create_app(dict(config))
    second = create_app(dict(config))
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert first.extensions["settings"].twilio_auth_token
    assert (
        first.extensions["settings"].twilio_auth_token
        == second.extensions["settings"].twilio_auth_token
    )
    assert (tmp_path / "secret-key").stat().st_mode & 0o077 == 0


def test_log_lines_carry_the_ids_given_in_extra():
    import logging

    from app import ContextFormatter

    record = logging.makeLogRecord(
        {"msg": "reply sent", "levelname": "INFO", "outbound_id": 7, "message_sid": "SM1"}
    )
    line = ContextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO reply sent outbound_id=7 message_sid=SM1"


@pytest.mark.parametrize("url", ["https://sms.example.com/#rc=5", "https://sms.example.com?x=1"])
def test_public_base_url_with_a_fragment_or_query_is_refused(url):
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        Settings.from_env({"PUBLIC_BASE_URL": url, "SECRET_KEY": "k"})


def test_metrics_networks_must_be_networks():
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_NETWORKS"):
        Settings.from_env({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8, not-a-network"})
    settings = Settings.from_env({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8, ::1"})
    assert settings.metrics_allowed_networks == ("10.0.0.0/8", "::1")


def test_the_instance_folder_database_and_secrets_are_private_from_the_first_byte(
    tmp_path, monkeypatch
):
    """Finding 9: with the default umask instance/ was 0755 and the SQLite file 0644; secret
    files were written first and made 0600 only afterwards."""
    import os
    import stat

    created: dict[str, int] = {}
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            created[os.fspath(path)] = mode
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", watching_open)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("made private only afterwards"))
    old_umask = os.umask(0o022)
    try:
        instance = tmp_path / "instance"
        app = create_app({"env": {"INSTANCE_DIR": str(instance)}})
        app.test_cli_runner().invoke(args=["db", "upgrade"])
        app.test_client().get("/healthz")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    for name in ("secret-key", "dev-auth-token", "suppression-key", "totp-key", "gateway.sqlite3"):
        path = instance / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert created[str(path)] == 0o600, name  # created with 0600, not changed later
    for extra in instance.glob("gateway.sqlite3-*"):  # SQLite's WAL and shared memory
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra.name


def test_an_existing_instance_folder_of_ours_is_tightened(tmp_path):
    import os
    import stat

    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    os.chmod(instance, 0o755)
    create_app({"env": {"INSTANCE_DIR": str(instance)}})
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700


def test_sending_rules_settings():
    from datetime import date, time

    from app.config import ConfigError, Settings

    settings = Settings.from_env(
        {
            "REVOKE_ALL_FROM": "2026-06-01",
            "NON_US_SENDING_WINDOWS": "*=09:00-20:00, gb=10:00-19:30",
        },
        {"testing": True},
    )
    assert settings.revoke_all_from == date(2026, 6, 1)
    assert settings.non_us_sending_windows == {
        "*": (time(9), time(20)),
        "GB": (time(10), time(19, 30)),
    }
    defaults = Settings.from_env({}, {"testing": True})
    assert defaults.revoke_all_from == date(2027, 1, 31)
    assert defaults.non_us_sending_windows == {"*": (time(8), time(21))}
    for name, raw in (
        ("REVOKE_ALL_FROM", "next year"),
        ("NON_US_SENDING_WINDOWS", "GB=20:00-08:00"),
        ("NON_US_SENDING_WINDOWS", "Britain=08:00-20:00"),
        ("NON_US_SENDING_WINDOWS", "GB=8am-8pm"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw}, {"testing": True})


def test_transparency_log_settings_and_their_defaults(tmp_path):
    defaults = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    assert defaults.ledger_checkpoint_dir == tmp_path / "checkpoints"
    assert defaults.ledger_checkpoint_minutes == 60
    assert defaults.ledger_tsa_url is None and defaults.ledger_signing_key == ""
    chosen = Settings.from_env(
        {
            "LEDGER_CHECKPOINT_DIR": "/mnt/worm/ledger",
            "LEDGER_CHECKPOINT_MINUTES": "15",
            "LEDGER_TSA_URL": "https://tsa.example/tsr",
        }
    )
    assert str(chosen.ledger_checkpoint_dir) == "/mnt/worm/ledger"
    assert chosen.ledger_checkpoint_minutes == 15
    assert chosen.ledger_tsa_url == "https://tsa.example/tsr"
    with pytest.raises(ConfigError, match="LEDGER_CHECKPOINT_MINUTES"):
        Settings.from_env({"LEDGER_CHECKPOINT_MINUTES": "0"})
    with pytest.raises(ConfigError, match="LEDGER_TSA_URL"):
        Settings.from_env({"LEDGER_TSA_URL": "tsa.example"})
