"""The suppression list's key (app.ledger.suppression_keys): recorded, checked at start, re-keyed.

Finding 4: SUPPRESSION_KEY defaulted to a key derived from SECRET_KEY, so a routine
SECRET_KEY rotation silently emptied the suppression list: an erased number could
be imported again and texted.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.ledger.suppression import phone_hmac, suppressed_at
from app.ledger.suppression_keys import SuppressionKeyError, fingerprint, legacy_key_from_secret
from app.privacy.erasure import erase_number
from app.store.db import utcnow
from app.store.models import KeyRecord, Suppression
from tests.conftest import make_test_app
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def erase(app, phone=PHONE) -> None:
    with app.extensions["db"].transaction() as session:
        erase_number(
            session,
            phone=phone,
            reason="ticket DPO-1",
            actor="dpo@example.com",
            key=app.extensions["settings"].suppression_hmac_key,
            now=utcnow(),
        )


def is_suppressed(app, phone=PHONE) -> bool:
    with app.extensions["db"].transaction(write=False) as session:
        key = app.extensions["settings"].suppression_hmac_key
        return suppressed_at(session, key, phone) is not None


def import_row(app, phone=PHONE):
    import io

    data = (
        "phone,program,consented_at,method,disclosure_text\n"
        f"{phone},demo,2026-01-01T00:00:00Z,web form,Demo alerts\n"
    ).encode()
    path = app.instance_path + "/import.csv"
    with open(path, "wb") as handle:
        handle.write(io.BytesIO(data).read())
    return app.test_cli_runner().invoke(args=["import", path, "--source", "crm"])


def apps(database_url, tmp_path, **settings):
    made = []

    def build(**overrides):
        app = make_test_app(database_url, tmp_path, **{**settings, **overrides})
        made.append(app)
        return app

    return build, made


def test_rotating_secret_key_leaves_the_suppression_list_intact(database_url, tmp_path):
    first = make_test_app(database_url, tmp_path, secret_key="secret one")
    client = first.test_client()
    send_text(client, PHONE, "JOIN")
    erase(first)
    assert is_suppressed(first)
    rotated = make_test_app(database_url, tmp_path, secret_key="secret two")
    assert is_suppressed(rotated)
    result = import_row(rotated)
    assert result.exit_code == 1 and "erased at its owner's request" in result.output
    first.extensions["db"].dispose()
    rotated.extensions["db"].dispose()


def test_a_start_with_another_suppression_key_is_refused(database_url, tmp_path):
    first = make_test_app(database_url, tmp_path, suppression_key="the key erasures used")
    erase(first)
    first.extensions["db"].dispose()
    with pytest.raises(SuppressionKeyError, match="not the key the suppression list"):
        make_test_app(database_url, tmp_path, suppression_key="a different key")


def test_rekey_rewraps_the_key_so_every_entry_still_matches(database_url, tmp_path):
    old, new = "the old suppression key", "the new suppression key"
    first = make_test_app(database_url, tmp_path, suppression_key=old)
    erase(first)
    hashes_before = _hashes(first)
    first.extensions["db"].dispose()

    rotating = make_test_app(
        database_url, tmp_path, suppression_key=new, suppression_key_previous=old
    )
    assert is_suppressed(rotating)  # the rotation window: the previous key still opens it
    result = rotating.test_cli_runner().invoke(args=["suppression", "rekey"])
    assert result.exit_code == 0, result.output
    assert "re-keyed" in result.output
    rotating.extensions["db"].dispose()

    after = make_test_app(database_url, tmp_path, suppression_key=new)
    assert is_suppressed(after) and _hashes(after) == hashes_before
    with after.extensions["db"].transaction(write=False) as session:
        row = session.get(KeyRecord, "suppression")
        assert row.fingerprint == fingerprint(new)
        assert old not in row.wrapped_key and new not in row.wrapped_key
    assert import_row(after).exit_code == 1
    after.extensions["db"].dispose()
    with pytest.raises(SuppressionKeyError):
        make_test_app(database_url, tmp_path, suppression_key=old)


def test_rekey_needs_the_previous_key(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, suppression_key="only key")
    result = app.test_cli_runner().invoke(args=["suppression", "rekey"])
    assert result.exit_code != 0 and "SUPPRESSION_KEY_PREVIOUS" in result.output
    app.extensions["db"].dispose()


def test_entries_from_before_the_key_record_are_adopted_not_guessed(
    database_url, tmp_path, monkeypatch
):
    """A deployment that never set SUPPRESSION_KEY hashed with a key derived from SECRET_KEY."""
    first = make_test_app(database_url, tmp_path, secret_key="the old secret")
    with first.extensions["db"].transaction() as session:
        session.execute(KeyRecord.__table__.delete())  # as before migration 0008
        session.add(
            Suppression(
                phone_hmac=phone_hmac(legacy_key_from_secret("the old secret"), PHONE),
                suppressed_at=utcnow(),
            )
        )
    first.extensions["db"].dispose()
    with pytest.raises(SuppressionKeyError, match="suppression adopt"):
        make_test_app(database_url, tmp_path, secret_key="the old secret")

    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")  # the flask command waits for first use
    operator = make_test_app(database_url, tmp_path, secret_key="the old secret")
    with pytest.raises(SuppressionKeyError):
        operator.extensions["settings"].suppression_hmac_key  # noqa: B018
    result = operator.test_cli_runner().invoke(args=["suppression", "adopt", "--from-secret-key"])
    assert result.exit_code == 0, result.output
    again = operator.test_cli_runner().invoke(args=["suppression", "adopt"])
    assert again.exit_code != 0 and "already recorded" in again.output
    operator.extensions["db"].dispose()
    monkeypatch.delenv("FLASK_RUN_FROM_CLI")

    rotated = make_test_app(database_url, tmp_path, secret_key="a new secret")
    assert is_suppressed(rotated)
    rotated.extensions["db"].dispose()


def test_a_new_database_gets_a_random_data_key_not_the_operators_key(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, suppression_key="operator key")
    data_key = app.extensions["settings"].suppression_hmac_key
    assert len(data_key) == 32 and data_key != b"operator key"
    app.extensions["db"].dispose()


def _hashes(app) -> set[str]:
    with app.extensions["db"].transaction(write=False) as session:
        return set(session.execute(select(Suppression.phone_hmac)).scalars())
