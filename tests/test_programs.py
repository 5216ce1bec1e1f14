"""The programs file (app.core.programs): loading, validation, carrier-rule lint, segments."""

from __future__ import annotations

import copy
import tomllib
from datetime import timedelta

import pytest

from app.config import DEMO_PROGRAMS_FILE
from app.core.keywords import LANGUAGES
from app.core.program_lint import lint_catalog, segments
from app.core.programs import TEXT_NAMES, ProgramsError, load_programs, parse_programs


@pytest.fixture
def demo_raw() -> dict:
    return tomllib.loads(DEMO_PROGRAMS_FILE.read_text(encoding="utf-8"))


def test_demo_runs_on_every_number_with_join_and_every_language():
    catalog = load_programs(DEMO_PROGRAMS_FILE)
    [demo] = catalog.programs
    assert demo.numbers == () and demo.keywords == ("JOIN",)
    assert set(demo.texts) == set(LANGUAGES)
    assert catalog.for_number("12345") == [demo] == catalog.for_number("+14155550100")
    assert catalog.keyword_map("12345") == {"join": "demo"}
    assert demo.confirmation_window == timedelta(hours=24)


def test_demo_passes_the_carrier_lint():
    assert lint_catalog(load_programs(DEMO_PROGRAMS_FILE)) == []


def test_texts_for_falls_back_to_the_default_language(demo_raw):
    del demo_raw["programs"][0]["texts"]["ru"]
    [demo] = parse_programs(demo_raw).programs
    assert demo.texts_for(["ru"]).language == "en"
    assert demo.texts_for(["ru", "bg"]).language == "bg"
    assert demo.texts_for([]).language == "en"


def test_programs_run_on_their_numbers_and_keywords_stay_with_them(demo_raw):
    second = copy.deepcopy(demo_raw["programs"][0])
    second.update(id="vip", keywords=["VIP"], numbers=["+1 (415) 555-0199"])
    demo_raw["programs"][0]["numbers"] = ["12345"]
    demo_raw["programs"].append(second)
    catalog = parse_programs(demo_raw)
    assert [p.id for p in catalog.for_number("12345")] == ["demo"]
    assert [p.id for p in catalog.for_number("+14155550199")] == ["vip"]  # normalised to E.164
    assert catalog.keyword_map("+14155550199") == {"vip": "vip"}
    assert catalog.for_number("99999") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("brand"), "missing brand"),
        (lambda p: p.update(keywords=["STOP"]), "reserved"),
        (lambda p: p.update(keywords=["Ayuda"]), "reserved"),
        (lambda p: p.update(keywords=[]), "missing keywords"),
        (lambda p: p.update(keywords="JOIN"), "list of strings"),
        (lambda p: p.update(colour="blue"), "unknown field"),
        (lambda p: p.update(id="has spaces"), "id must be"),
        (lambda p: p.update(confirmation_window_hours=0), "confirmation_window_hours"),
        (lambda p: p.update(default_language="de"), "default language"),
        (lambda p: p["texts"].update(de=p["texts"]["en"]), "unsupported language 'de'"),
        (lambda p: p["texts"]["fr"].pop("help"), "texts.fr: missing help"),
        (lambda p: p["texts"]["en"].update(welcom="typo"), "unknown text"),
        (lambda p: p.pop("texts"), "define its texts"),
    ],
)
def test_invalid_programs_fail_at_load_with_a_clear_message(demo_raw, change, message):
    change(demo_raw["programs"][0])
    with pytest.raises(ProgramsError, match=message):
        parse_programs(demo_raw)


def test_duplicate_ids_and_shared_keywords_are_refused(demo_raw):
    demo_raw["programs"].append(copy.deepcopy(demo_raw["programs"][0]))
    with pytest.raises(ProgramsError, match="duplicate program id"):
        parse_programs(demo_raw)
    demo_raw["programs"][1]["id"] = "other"
    with pytest.raises(ProgramsError, match="share keyword"):
        parse_programs(demo_raw)
    demo_raw["programs"][0]["numbers"] = ["11111"]
    demo_raw["programs"][1]["numbers"] = ["22222"]
    assert len(parse_programs(demo_raw).programs) == 2  # different numbers: no clash


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ProgramsError, match="does not exist"):
        load_programs(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[programs]\nid=", encoding="utf-8")
    with pytest.raises(ProgramsError, match="not valid TOML"):
        load_programs(broken)
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ProgramsError, match="at least one"):
        load_programs(empty)


# --- carrier-rule lint -----------------------------------------------------------------------


def lint_with(demo_raw, language: str, name: str, text: str) -> list[str]:
    demo_raw["programs"][0]["texts"][language][name] = text
    return lint_catalog(parse_programs(demo_raw))


@pytest.mark.parametrize(
    ("language", "name", "remove", "complaint"),
    [
        ("en", "welcome", "Msg & data rates may apply. ", "Msg & data rates may apply"),
        ("en", "confirm_request", "reply YES to confirm. ", "how to confirm"),
        ("en", "confirm_request", "Up to 4 msgs/mo. ", "frequency"),
        ("en", "welcome", "Reply HELP for help, ", "HELP instructions"),
        ("en", "help", "Reply STOP to cancel.", "STOP"),
        ("en", "welcome", " Terms: https://example.com/terms", "terms link"),
        ("en", "help", "Help: help@example.com. ", "help contact"),
        ("en", "disclosure", " Privacy: https://example.com/privacy", "privacy"),
        ("en", "how_to_join", "Text JOIN to subscribe.", "program keyword"),
        ("es", "welcome", "Pueden aplicarse tarifas de mensajes y datos. ", "rates"),
        ("fr", "confirm_request", "ARRET pour annuler. ", "STOP"),
        ("ru", "welcome", "ПОМОЩЬ — справка, ", "HELP"),
        ("bg", "resubscribed", "До 4 съобщ./мес. ", "frequency"),
    ],
)
def test_lint_names_each_missing_element(demo_raw, language, name, remove, complaint):
    text = demo_raw["programs"][0]["texts"][language][name]
    assert remove in text
    problems = lint_with(demo_raw, language, name, text.replace(remove, ""))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"demo [{language}] {name}: missing")
    assert complaint in problems[0]


def test_lint_wants_the_program_or_brand_name(demo_raw):
    problems = lint_with(demo_raw, "en", "opt_out_confirmation", "You are unsubscribed.")
    assert problems == ["demo [en] opt_out_confirmation: missing the program or brand name"]


def test_lint_limits_segments(demo_raw):
    original = demo_raw["programs"][0]["texts"]["en"]["opt_out_confirmation"]
    long_gsm = "Demo Alerts: you are unsubscribed. " + "x" * 200
    [problem] = lint_with(demo_raw, "en", "opt_out_confirmation", long_gsm)
    assert "GSM-7" in problem and "at most 1 allowed" in problem
    demo_raw["programs"][0]["texts"]["en"]["opt_out_confirmation"] = original
    long_ucs2 = "Demo Alerts: вы отписаны. " + "я" * 60
    [problem] = lint_with(demo_raw, "ru", "opt_out_confirmation", long_ucs2)
    assert "UCS-2" in problem


@pytest.mark.parametrize(
    ("text", "encoding", "units", "count"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the GSM basic set
        ("á" * 70, "UCS-2", 70, 1),  # á is not
        ("á" * 71, "UCS-2", 71, 2),
        ("я" * 134, "UCS-2", 134, 2),
        ("я" * 135, "UCS-2", 135, 3),
        ("🙂" * 35, "UCS-2", 70, 1),  # emoji are surrogate pairs
        ("", "GSM-7", 0, 1),
    ],
)
def test_segments(text, encoding, units, count):
    parts = segments(text)
    assert (parts.encoding, parts.units, parts.count) == (encoding, units, count)


def test_every_text_name_is_linted():
    from app.core.program_lint import REQUIRED_ELEMENTS

    assert set(REQUIRED_ELEMENTS) == set(TEXT_NAMES)
