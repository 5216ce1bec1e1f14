"""The checkpoint signing key: from LEDGER_SIGNING_KEY in any of its forms, or the demo's own."""

from __future__ import annotations

import base64
import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from app import create_app
from app.config import ConfigError, Settings
from app.ledger import signing
from app.ledger.signing import CONSOLE_KEY_FILE, load_ledger_key, parse_signing_key

SEED = bytes(range(32))


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def test_every_accepted_form_gives_the_same_key(key, tmp_path):
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    path = tmp_path / "ledger.pem"
    path.write_text(pem)
    for value in [pem, str(path), base64.b64encode(SEED).decode(), base64.b64encode(der).decode()]:
        assert raw(parse_signing_key(value)) == SEED


@pytest.mark.parametrize("value", ["not a key", "-----BEGIN PRIVATE KEY-----\nxx\n", "AAAA"])
def test_malformed_keys_are_refused(value):
    with pytest.raises(ConfigError, match="LEDGER_SIGNING_KEY"):
        parse_signing_key(value)


def test_a_key_of_another_kind_is_refused():
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode()
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        parse_signing_key(pem)


def test_a_malformed_key_stops_the_app_at_start(tmp_path):
    with pytest.raises(ConfigError, match="LEDGER_SIGNING_KEY"):
        create_app(
            {
                "env": {},
                "testing": True,
                "instance_dir": tmp_path,
                "database_url": f"sqlite:///{tmp_path}/x.sqlite3",
                "ledger_signing_key": "garbage",
            }
        )


def test_outside_console_mode_there_is_no_key_unless_given(tmp_path, key):
    twilio = {
        "SMS_BACKEND": "twilio",
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_AUTH_TOKEN": "t",
        "SECRET_KEY": "s",
        "SUPPRESSION_KEY": "k",
        "TOTP_ENCRYPTION_KEY": "ZTJlLXRvdHAta2V5LXRoaXJ0eS10d28tYnl0ZXMhISE=",
        "INSTANCE_DIR": str(tmp_path),
    }
    assert load_ledger_key(Settings.from_env(twilio)) is None
    given = Settings.from_env({**twilio, "LEDGER_SIGNING_KEY": base64.b64encode(SEED).decode()})
    assert raw(load_ledger_key(given).private) == SEED
    assert not (tmp_path / CONSOLE_KEY_FILE).exists()


def test_the_console_key_is_made_once_private_from_the_first_byte(tmp_path, monkeypatch):
    modes = []
    real_fdopen = os.fdopen

    def watching_fdopen(descriptor, *args, **kwargs):
        modes.append(stat.S_IMODE(os.fstat(descriptor).st_mode))  # before a byte is written
        return real_fdopen(descriptor, *args, **kwargs)

    monkeypatch.setattr(signing.os, "fdopen", watching_fdopen)
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "SMS_BACKEND": "console"})
        first = load_ledger_key(settings)
        second = load_ledger_key(settings)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE((tmp_path / CONSOLE_KEY_FILE).stat().st_mode) == 0o600
    assert first.fingerprint == second.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == [CONSOLE_KEY_FILE]


def test_processes_starting_together_agree_on_one_console_key(tmp_path):
    fingerprints = []

    def start():
        fingerprints.append(signing.LedgerKey(signing.console_key(tmp_path)).fingerprint)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(fingerprints)) == 1


def test_the_key_never_shows_in_its_repr(key):
    ledger_key = signing.LedgerKey(key)
    assert SEED.hex() not in repr(ledger_key)
    assert base64.b64encode(SEED).decode() not in repr(ledger_key)
    assert ledger_key.fingerprint[:16] in repr(ledger_key)
