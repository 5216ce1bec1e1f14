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
