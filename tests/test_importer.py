"""Import (`flask --app app import FILE.csv --source TEXT`): evidence in, opt-outs untouched."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.config import DEMO_PROGRAMS_FILE
from app.consent.importer import IMPORT, ImportFileError, check_row, parse_rows
from app.core.programs import load_programs
from app.ledger.chain import verify_ledger
from app.store.db import utcnow
from app.store.models import ConsentEvent, LedgerText, Subscriber, Subscription
from tests.twilio_helpers import send_text

DISCLOSURE = "Demo Alerts: up to 4 msgs/mo. Msg & data rates may apply. Reply STOP to cancel."
HEADER = "phone,program,consented_at,method,disclosure_text,language,keyword\n"
GOOD = [
    f'+14155550100,demo,2024-03-01T10:00:00Z,web form example.com/join,"{DISCLOSURE}",en,\n',
    f'(415) 555-0101,demo,2024-03-02T11:30:00-05:00,keyword JOIN,"{DISCLOSURE}",es,JOIN\n',
]


def write(tmp_path, *rows: str, header: str = HEADER, name: str = "list.csv"):
    path = tmp_path / name
    path.write_text(header + "".join(rows), encoding="utf-8")
    return path


def run_import(runner, path, *extra, source="crm-export-2024"):
    return runner.invoke(args=["import", str(path), "--source", source, *extra])


def subscription(db, phone: str):
    with db.transaction(write=False) as session:
        return session.execute(
            select(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.phone == phone)
        ).scalar_one_or_none()


def count_events(db) -> int:
    with db.transaction(write=False) as session:
        return session.execute(select(func.count()).select_from(ConsentEvent)).scalar_one()


def test_rows_with_evidence_become_active_ledger_events_naming_the_source(db, runner, tmp_path):
    result = run_import(runner, write(tmp_path, *GOOD))
    assert result.exit_code == 0, result.output
    assert "line 2: imported (event 1)" in result.output
    assert "2 rows: 2 imported, 0 already imported, 0 already active, 0 rejected" in result.output
    assert "+1415" not in result.output  # the report names lines, not numbers

    active = subscription(db, "+14155550101")
    assert active.status == "active"
    assert active.since == datetime(2024, 3, 2, 16, 30, tzinfo=UTC)
    assert active.confirmed_at == active.since and active.language == "es"
    with db.transaction(write=False) as session:
        events = session.execute(select(ConsentEvent).order_by(ConsentEvent.id)).scalars().all()
        assert [e.kind for e in events] == [IMPORT, IMPORT]
        assert {e.actor for e in events} == {"crm-export-2024"}
        assert events[0].occurred_at == datetime(2024, 3, 1, 10, tzinfo=UTC)
        assert (events[0].status_before, events[0].status_after) == ("none", "active")
        assert "web form example.com/join" in events[0].note
        assert "keyword JOIN" in events[1].note
        text = session.get(LedgerText, events[0].disclosure_sha256)
        assert text.body == DISCLOSURE
        assert verify_ledger(session).ok
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0
    bundle = runner.invoke(args=["evidence", "+14155550100", "--format", "html"])
    assert bundle.exit_code == 0 and "crm-export-2024" in bundle.output
    assert "web form example.com/join" in bundle.output


def test_importing_the_same_file_twice_adds_nothing(db, runner, tmp_path):
    path = write(tmp_path, *GOOD)
    assert run_import(runner, path).exit_code == 0
    again = run_import(runner, path, source="someone-else")
    assert again.exit_code == 0
    assert "2 already imported" in again.output
    assert count_events(db) == 2


def test_rows_without_evidence_are_rejected_one_by_one(db, runner, tmp_path):
    future = (utcnow() + timedelta(days=2)).isoformat()
    rows = [
        GOOD[0],
        f'not-a-number,demo,2024-03-01T10:00:00Z,web,"{DISCLOSURE}",,\n',
        f'+14155550102,nope,2024-03-01T10:00:00Z,web,"{DISCLOSURE}",,\n',
        f'+14155550103,demo,yesterday,web,"{DISCLOSURE}",,\n',
        f'+14155550104,demo,2024-03-01T10:00:00,web,"{DISCLOSURE}",,\n',
        f'+14155550105,demo,{future},web,"{DISCLOSURE}",,\n',
        f'+14155550106,demo,2024-03-01T10:00:00Z,,"{DISCLOSURE}",,\n',
        "+14155550107,demo,2024-03-01T10:00:00Z,web,,,\n",
        f'+14155550108,demo,2024-03-01T10:00:00Z,web,"{DISCLOSURE}",de,\n',
        "\n",
        f'12345,demo,2024-03-01T10:00:00Z,web,"{DISCLOSURE}",,\n',
    ]
    report_path = tmp_path / "report.csv"
    result = run_import(runner, write(tmp_path, *rows), "--report", str(report_path))
    assert result.exit_code == 1
    expected = {
        3: "phone is not a phone number",
        4: "program 'nope' does not exist",
        5: "consented_at is not an ISO 8601 time",
        6: "consented_at has no time zone",
        7: "consented_at is in the future",
        8: "method is empty",
        9: "disclosure_text is empty",
        10: "language must be one of",
        12: "phone is not a phone number",
    }
    for line, reason in expected.items():
        assert f"line {line}: rejected: {reason}" in result.output
    assert "10 rows: 1 imported, 0 already imported, 0 already active, 9 rejected" in result.output
    assert count_events(db) == 1
    with report_path.open(newline="", encoding="utf-8") as handle:
        report = list(csv.DictReader(handle))
    assert [r["outcome"] for r in report] == ["imported"] + ["rejected"] * 9
    assert report[0]["event_id"] and "does not exist" in report[2]["reason"]


def test_an_import_never_overrides_an_opt_out(db, client, runner, tmp_path):
    send_text(client, "+14155550100", "JOIN")
    send_text(client, "+14155550100", "STOP")
    before = count_events(db)
    result = run_import(runner, write(tmp_path, GOOD[0]))
    assert result.exit_code == 1
    assert "an import never overrides an opt-out" in result.output
    assert subscription(db, "+14155550100").status == "opted_out"
    assert count_events(db) == before


def test_pending_becomes_active_and_active_is_left_alone(db, client, runner, tmp_path):
    send_text(client, "+14155550100", "JOIN")  # pending
    send_text(client, "+14155550101", "JOIN")
    send_text(client, "+14155550101", "YES")  # active
    result = run_import(runner, write(tmp_path, *GOOD))
    assert result.exit_code == 0, result.output
    assert "1 imported" in result.output and "1 already active" in result.output
    assert subscription(db, "+14155550100").status == "active"
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_erased_numbers_are_rejected(db, runner, tmp_path):
    erased = runner.invoke(args=["erase", "+14155550100", "--reason", "ticket 9"])
    assert erased.exit_code == 0
    result = run_import(runner, write(tmp_path, GOOD[0]))
    assert result.exit_code == 1
    assert "erased at its owner's request" in result.output
    with db.transaction(write=False) as session:
        assert session.execute(select(Subscriber.phone)).scalars().all() == [None]


def test_an_imported_subscriber_opts_out_and_back_in_like_any_other(db, client, runner, tmp_path):
    assert run_import(runner, write(tmp_path, GOOD[0])).exit_code == 0
    send_text(client, "+14155550100", "STOP")
    assert subscription(db, "+14155550100").status == "opted_out"
    send_text(client, "+14155550100", "START")
    assert subscription(db, "+14155550100").status == "active"
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"phone,program\n+14155550100,demo\n", "lacks the column(s) consented_at"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"", "lacks the column(s) phone"),
    ],
)
def test_an_unreadable_file_imports_nothing_and_exits_2(db, runner, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = run_import(runner, path)
    assert result.exit_code == 2
    assert message in result.output
    assert count_events(db) == 0


def test_a_missing_file_exits_2(runner, tmp_path):
    result = run_import(runner, tmp_path / "missing.csv")
    assert result.exit_code == 2


def test_a_byte_order_mark_and_any_column_order_are_fine(db, runner, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        (
            "\ufeffMethod,Disclosure_Text,Phone,Program,Consented_At\n"
            f'paper form,"{DISCLOSURE}",+14155550100,demo,2023-12-01T00:00:00+00:00\n'
        ).encode()
    )
    result = run_import(runner, path)
    assert result.exit_code == 0, result.output
    assert subscription(db, "+14155550100").status == "active"


def test_row_checks_are_pure():
    catalog = load_programs(DEMO_PROGRAMS_FILE)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    row = check_row(
        7,
        {
            "phone": "+1 415 555 0100",
            "program": "demo",
            "consented_at": "2024-12-31T23:59:59Z",
            "method": "  web   form ",
            "disclosure_text": DISCLOSURE,
        },
        catalog,
        now,
    )
    assert (row.line, row.phone, row.method, row.language) == (7, "+14155550100", "web form", None)
    assert row.fingerprint(b"k") == row.fingerprint(b"k") != row.fingerprint(b"other key")
    with pytest.raises(ImportFileError):
        list(parse_rows("phone\n+14155550100\n", catalog, now))


def test_a_number_with_two_readings_is_refused_not_guessed():
    from app.consent.importer import read_phone

    assert read_phone("(415) 555-0101", "US") == "+14155550101"
    assert read_phone("+44 20 7946 0958", "US") == "+442079460958"
    # +20 2555 0100 (Egypt) or +1 202 555 0100 (Washington)? A wrong guess texts a stranger.
    assert read_phone("2025550100", "US") is None
    assert read_phone("+12025550100", "US") == "+12025550100"


def test_a_row_written_first_by_a_concurrent_import_is_retried_once(
    db, runner, tmp_path, monkeypatch
):
    from sqlalchemy.exc import IntegrityError

    import app.consent.importer as importer

    real = importer.import_row
    calls = []

    def racing(session, row, **kwargs):
        calls.append(row.line)
        if len(calls) == 1:  # another import got there first: our insert trips its key
            raise IntegrityError("INSERT", {}, Exception("duplicate key"))
        return real(session, row, **kwargs)

    monkeypatch.setattr(importer, "import_row", racing)
    result = run_import(runner, write(tmp_path, GOOD[0]))
    assert result.exit_code == 0, result.output
    assert calls == [2, 2] and "line 2: imported" in result.output
    assert count_events(db) == 1


def test_a_method_holding_a_phone_number_is_rejected(db, runner, tmp_path):
    """Finding 5: import notes sit in hashed ledger fields that erasure cannot remove."""
    path = write(
        tmp_path,
        f'+14155550100,demo,2024-03-01T10:00:00Z,phoned back on 415-555-0123,"{DISCLOSURE}",en,\n',
        f'+14155550102,demo,2024-03-01T10:00:00Z,agent keyed in 4155550102,"{DISCLOSURE}",en,\n',
    )
    result = run_import(runner, path)
    assert result.exit_code == 1
    assert result.output.count("method must not contain a phone number") == 2
    assert count_events(db) == 0


def test_a_source_holding_a_phone_number_imports_nothing(db, runner, tmp_path):
    result = run_import(runner, write(tmp_path, GOOD[0]), source="list from +1 415 555 0199")
    assert result.exit_code == 2 and "--source must not hold a phone number" in result.output
    assert count_events(db) == 0


def test_rows_may_give_a_location_and_a_last_purchase_for_the_sending_rules(db, runner, tmp_path):
    from app.store.send_models import RecipientProfile

    path = write(
        tmp_path,
        '+13055550100,demo,2026-01-01T10:00:00Z,web form,"Demo Alerts…",,,FL,32501,2025-12-24\n',
        "+13055550101,demo,2026-01-01T10:00:00Z,web form,Demo Alerts…,,,Narnia,1,yesterday\n",
        header=HEADER.strip() + ",state,zip,purchased_on\n",
    )
    result = run_import(runner, path)
    assert "1 imported" in result.output and "1 rejected" in result.output
    for problem in ("state is not a US state", "zip is not", "purchased_on is not a date"):
        assert problem in result.output
    with db.transaction(write=False) as session:
        profile = session.execute(select(RecipientProfile)).scalar_one()
    assert (profile.state, profile.zip_code, str(profile.purchased_on)) == (
        "FL",
        "32501",
        "2025-12-24",
    )
    assert profile.location_source == "import"
