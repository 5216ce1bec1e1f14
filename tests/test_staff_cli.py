"""Commands for staff accounts, API tokens and keys (app.cli.access), run by the test runner."""

from __future__ import annotations

import re

from sqlalchemy import select, text

from app.access.secrets import SeedCipher, generate_key
from app.store.models import ApiToken, StaffAuditEntry, StaffUser
from tests.conftest import make_test_app
from tests.staff_helpers import make_staff


def test_staff_create_prints_an_enrolment_link_last_and_no_secret(runner, db):
    result = runner.invoke(args=["staff", "create", "Officer@Example.com", "--role", "compliance"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert re.fullmatch(r"enrol: https://gateway\.example\.com/staff/enrol/[\w-]{40,}", last), last
    assert "password" not in result.output.lower().replace("their own password", "")
    assert "totp-secret" not in result.output and "otpauth" not in result.output
    with db.transaction(write=False) as session:
        user = session.execute(select(StaffUser)).scalar_one()
        actions = list(session.execute(select(StaffAuditEntry.action)).scalars())
    assert user.email == "officer@example.com" and user.enrolled_at is None
    assert actions == ["staff_create", "enrol_link"]


def test_staff_create_refuses_a_duplicate(runner):
    runner.invoke(args=["staff", "create", "a@example.com", "--role", "viewer"])
    result = runner.invoke(args=["staff", "create", "A@example.com", "--role", "viewer"])
    assert result.exit_code != 0 and "already exists" in result.output


def test_staff_reset_stops_the_credentials_and_prints_a_new_link(app, runner, db):
    officer = make_staff(db, "compliance", app=app)
    result = runner.invoke(args=["staff", "reset", officer.email])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("enrol: ")
    with db.transaction(write=False) as session:
        user = session.get(StaffUser, officer.id)
        assert user.enrolled_at is None and user.totp_seed_encrypted is None


def test_api_token_create_with_scopes_and_expiry(runner, db, client):
    result = runner.invoke(
        args=["api-token", "create", "sender", "--scope", "messages:send", "--expires-days", "30"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("scg_")
    default = runner.invoke(args=["api-token", "create", "reader"]).output.strip().splitlines()
    with db.transaction(write=False) as session:
        rows = {r.name: r for r in session.execute(select(ApiToken)).scalars()}
    assert rows["sender"].scopes == "messages:send" and rows["sender"].expires_at is not None
    assert rows["reader"].scopes == "consent:read events:read" and rows["reader"].expires_at is None
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/events", headers=headers).status_code == 403
    reader = {"Authorization": f"Bearer {default[-1]}"}
    assert client.get("/api/v1/events", headers=reader).status_code == 200
    bad = runner.invoke(args=["api-token", "create", "x", "--scope", "admin:all"])
    assert bad.exit_code != 0


def test_rekey_totp_moves_every_seed_to_the_new_key(app, database_url, tmp_path):
    db = app.extensions["db"]
    officer = make_staff(db, "compliance", app=app)
    old = app.extensions["settings"].totp_encryption_key
    new = generate_key()
    rotating = make_test_app(
        database_url, tmp_path, totp_encryption_key=new, totp_encryption_key_previous=old
    )
    result = rotating.test_cli_runner().invoke(args=["staff", "rekey-totp"])
    assert result.exit_code == 0 and "1 TOTP seed(s)" in result.output, result.output
    with db.transaction(write=False) as session:
        stored = session.get(StaffUser, officer.id).totp_seed_encrypted
    assert SeedCipher([new]).decrypt(stored) == officer.totp_secret
    rotating.extensions["db"].dispose()


def test_db_upgrade_encrypts_seeds_stored_in_clear(app, runner, db):
    legacy = make_staff(db, "admin", app=app)
    with db.transaction() as session:
        session.execute(
            text("UPDATE staff_users SET totp_seed_encrypted = :seed WHERE id = :id"),
            {"seed": legacy.totp_secret, "id": legacy.id},
        )
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0 and "Encrypted 1 TOTP seed(s)" in result.output, result.output
    with db.transaction(write=False) as session:
        stored = session.get(StaffUser, legacy.id).totp_seed_encrypted
    assert stored.startswith("gAAAAA")
    assert app.extensions["seed_cipher"].decrypt(stored) == legacy.totp_secret
