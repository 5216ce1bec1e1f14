"""Phone normalisation (app.core.phones)."""

import pytest

from app.core.phones import mask_phone, normalize_sender, parse_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        (" +14155550100 ", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("+442071838750", "+442071838750"),
        ("+359888123456", "+359888123456"),
        ("12345", "12345"),  # short code
        ("898211", "898211"),
        ("ACME", "ACME"),  # alphanumeric sender id, verbatim
        ("Acme-Alerts", "Acme-Alerts"),
        ("+1", "+1"),  # not a possible number: kept verbatim rather than guessed
    ],
)
def test_normalize_sender(raw, expected):
    assert normalize_sender(raw) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("1-415-555-0100", "+14155550100"),
        ("12345", "12345"),
        ("not a number", None),
        ("", None),
        ("+1+415", None),
        ("4+15", None),
    ],
)
def test_parse_phone(typed, expected):
    assert parse_phone(typed) == expected


def test_mask_phone_keeps_only_country_code_and_last_digits():
    masked = mask_phone("+14155550100")
    assert "5550" not in masked and masked.endswith("00") and masked.startswith("+1")
    assert mask_phone(None) == "-"


def test_free_text_is_screened_for_phone_numbers():
    from app.core.phones import contains_phone_number

    for text in (
        "Called Jane Doe back on 415-555-0123",
        "her number is +44 7700 900461",
        "4155550123",
    ):
        assert contains_phone_number(text), text
    for text in ("ticket DPO-123", "checked on 2026-12-02", "keyword JOIN to 12345", "v1.2.3"):
        assert not contains_phone_number(text), text
    assert contains_phone_number("ref 4-1-5-5-5-5-0-1-0-0 x", "+14155550100")  # its own digits


def test_digits_are_masked_in_runs_and_numbers_to_two_digits():
    from app.core.phones import mask_digits, mask_for_display

    assert mask_digits("call 415 555 0123 at 5pm") == "call ••• ••• ••• at •••pm"
    assert mask_digits(None) is None
    assert mask_for_display("+14155550123") == "+1 •••• 23"
    assert mask_for_display("+447700900461") == "+44 •••• 61"
