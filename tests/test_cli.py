"""CLI commands (`flask --app app …`) through Flask's test runner."""

from __future__ import annotations

import json

from sqlalchemy import text

from app.store.models import ApiToken
from tests.ledger_tampering import tamper
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def test_api_token_create_prints_token_last(runner, client):
    result = runner.invoke(args=["api-token", "create", "crm"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    response = client.get("/api/v1/events", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_ledger_verify_passes_then_fails_after_tampering(runner, client, db):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "ledger intact: 2 events" in result.output

    with db.engine.begin() as connection:
        first = connection.execute(text("SELECT min(id) FROM consent_events")).scalar_one()
    tamper(db, "UPDATE consent_events SET intent = 'confirm' WHERE id = :id", id=first)
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert f"first bad event: {first}" in result.output


def test_evidence_json_and_html(runner, client, tmp_path):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    send_text(client, PHONE, '"><img src=x onerror=alert(1)>')
    result = runner.invoke(args=["evidence", "14155550100", "--format", "json"])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["phone"] == PHONE and bundle["verification"]["ok"]
    assert [e["intent"] for e in bundle["events"]] == ["opt_in", "confirm", "other"]
    assert bundle["events"][0]["disclosure"]
    assert bundle["events"][1]["replies"][0]["kind"] == "welcome"

    out = tmp_path / "evidence.html"
    result = runner.invoke(args=["evidence", PHONE, "--format", "html", "--output", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Consent evidence" in html


def test_evidence_for_unknown_number_fails_clearly(runner):
    result = runner.invoke(args=["evidence", "+14155559999"])
    assert result.exit_code != 0
    assert "no consent history" in result.output


def test_programs_check_passes_for_the_demo(runner):
    result = runner.invoke(args=["programs", "check"])
    assert result.exit_code == 0, result.output


def test_programs_check_fails_on_a_violation(database_url, tmp_path):
    from app.config import DEMO_PROGRAMS_FILE
    from tests.conftest import make_test_app

    bad = tmp_path / "bad.toml"
    bad.write_text(
        DEMO_PROGRAMS_FILE.read_text(encoding="utf-8").replace(
            "Msg & data rates may apply", "Enjoy"
        ),
        encoding="utf-8",
    )
    app = make_test_app(database_url, tmp_path, programs_file=bad)
    result = app.test_cli_runner().invoke(args=["programs", "check"])
    assert result.exit_code == 1
    assert "violation" in result.output


def test_db_upgrade_is_idempotent(runner):
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_worker_once_sends_queued_replies_through_console(runner, client, db, capfd):
    send_text(client, PHONE, "HELP")
    result = runner.invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    with db.transaction(write=False) as session:
        status, sid = session.execute(
            text("SELECT status, twilio_sid FROM outbound_messages")
        ).one()
    assert status == "sent" and sid


def test_api_token_rows(db, runner):
    runner.invoke(args=["api-token", "create", "one"])
    runner.invoke(args=["api-token", "create", "two"])
    from sqlalchemy import func, select

    with db.transaction(write=False) as session:
        assert session.execute(select(func.count(ApiToken.id))).scalar_one() == 2
