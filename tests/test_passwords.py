"""Password policy (app.access.passwords): ASVS 2.1, with zxcvbn's breach and pattern lists."""

from __future__ import annotations

import pytest

from app.access.passwords import PasswordRejected, check_new_password


@pytest.mark.parametrize(
    "password",
    [
        "quokka marmalade zeppelin",
        "Tr0ub4dor&3 horse",
        "пароль-очень-длинный-и-странный",  # any Unicode
        "🦘🦉🦔🦦🦥🦨🐙🦑🦞🦀🐡🐠",  # twelve emoji
        "x7#kLm9!pQ2z" * 10,  # 120 characters
    ],
)
def test_long_unusual_passwords_are_accepted(password):
    check_new_password(password, email="officer@example.com")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 12"),
        ("a  b  c  d  e  f", "at least 12"),  # runs of spaces count once
        ("x" * 129, "at most 128"),
        ("password1234", "too easy"),
        ("123456789012", "too easy"),
        ("iloveyou2024", "too easy"),
        ("qwertyuiop12", "too easy"),
        ("officerexample", "too easy"),  # the owner's own address
    ],
)
def test_short_long_common_and_breached_passwords_are_refused(password, message):
    with pytest.raises(PasswordRejected, match=message):
        check_new_password(password, email="officer@example.com")
