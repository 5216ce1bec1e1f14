"""Program purpose, frequency cap and message-body lint (app.core.program_lint)."""

from __future__ import annotations

import tomllib

import pytest

from app.config import DEMO_PROGRAMS_FILE
from app.core.program_lint import disclosed_frequency, lint_catalog, lint_message_body
from app.core.programs import ProgramsError, parse_programs
from app.core.sending_rules import ProgramCap, Purpose


@pytest.fixture
def demo_raw() -> dict:
    return tomllib.loads(DEMO_PROGRAMS_FILE.read_text(encoding="utf-8"))


def test_the_demo_declares_its_purpose_and_a_cap_matching_its_disclosure(demo_raw):
    [demo] = parse_programs(demo_raw).programs
    assert demo.purpose == Purpose.MARKETING
    assert demo.frequency_cap == ProgramCap(4, "month")
    assert lint_catalog(parse_programs(demo_raw)) == []


def test_programs_check_requires_a_purpose(demo_raw):
    del demo_raw["programs"][0]["purpose"]
    catalog = parse_programs(demo_raw)
    [demo] = catalog.programs
    assert demo.purpose is None and demo.sending_purpose == Purpose.MARKETING
    problems = lint_catalog(catalog)
    assert any("declare its purpose" in problem for problem in problems)


def test_an_unknown_purpose_stops_the_load(demo_raw):
    demo_raw["programs"][0]["purpose"] = "transactional"
    with pytest.raises(ProgramsError, match="purpose must be"):
        parse_programs(demo_raw)


@pytest.mark.parametrize(
    "cap",
    [{"messages": 4}, {"messages": 0, "per": "month"}, {"messages": 4, "per": "year"}, 4],
)
def test_a_malformed_cap_stops_the_load(demo_raw, cap):
    demo_raw["programs"][0]["frequency_cap"] = cap
    with pytest.raises(ProgramsError, match="frequency_cap must be"):
        parse_programs(demo_raw)


@pytest.mark.parametrize(
    ("cap", "bad_languages"),
    [
        ({"messages": 4, "per": "month"}, set()),
        ({"messages": 5, "per": "month"}, {"en", "es", "fr", "ru", "bg"}),
        ({"messages": 4, "per": "week"}, {"en", "es", "fr", "ru", "bg"}),
    ],
)
def test_programs_check_fails_when_the_cap_and_the_disclosure_disagree(
    demo_raw, cap, bad_languages
):
    demo_raw["programs"][0]["frequency_cap"] = cap
    problems = [p for p in lint_catalog(parse_programs(demo_raw)) if "frequency_cap" in p]
    assert {p.split("[")[1].split("]")[0] for p in problems} == bad_languages


def test_one_language_that_discloses_another_frequency_fails(demo_raw):
    demo_raw["programs"][0]["texts"]["fr"]["frequency"] = "Max 6 msgs/mois"
    problems = [p for p in lint_catalog(parse_programs(demo_raw)) if "frequency_cap" in p]
    assert len(problems) == 1 and "[fr]" in problems[0] and "6 per calendar month" in problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Up to 4 msgs/mo", ProgramCap(4, "month")),
        ("Hasta 4 msjs/mes", ProgramCap(4, "month")),
        ("До 4 сообщ./мес.", ProgramCap(4, "month")),
        ("3 msgs/wk", ProgramCap(3, "week")),
        ("1 msg/day", ProgramCap(1, "day")),
        ("Msg frequency varies", None),
        ("2-4 msgs/mo", None),
    ],
)
def test_disclosed_frequency(text, expected):
    assert disclosed_frequency(text) == expected


def test_a_cap_needs_a_disclosure_that_states_one(demo_raw):
    for texts in demo_raw["programs"][0]["texts"].values():
        texts["frequency"] = "Msg frequency varies"
    demo_raw["programs"][0]["frequency"] = "Msg frequency varies"
    problems = [p for p in lint_catalog(parse_programs(demo_raw)) if "frequency_cap" in p]
    assert problems and all("states no number" in p for p in problems)


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        ("Demo Alerts: 20% off today. Reply STOP to cancel.", ()),
        ("Demo Co: 20% off today. Responda ALTO para cancelar.", ()),
        ("20% off today. Reply STOP to cancel.", ("missing_name",)),
        ("Demo Alerts: 20% off today.", ("missing_stop",)),
        ("Demo Alerts: " + "x" * 500 + " Reply STOP", ("too_long",)),
        ("   ", ("empty",)),
    ],
)
def test_message_body_lint(demo_raw, body, problems):
    [demo] = parse_programs(demo_raw).programs
    assert lint_message_body(demo, body) == problems
