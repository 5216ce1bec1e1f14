"""Which passwords staff may choose: long enough, and not a common or breached one.

ASVS 2.1: at least 12 characters (runs of spaces counting once), up to 128, any
characters, never truncated, no composition rules, and checked against a list
of breached passwords. The list and the guessing estimate come from zxcvbn (a
port of Dropbox's estimator), which ships the most common passwords from public
breaches, English words, names and keyboard patterns; a password it estimates
as guessable in under 10^10 tries (score below 3) is refused with its feedback.
"""

from __future__ import annotations

import re

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_SCORE = 3
_ESTIMATED_CHARACTERS = 72  # zxcvbn's own limit; beyond it a password is long enough anyway


class PasswordRejected(ValueError):
    """The password may not be used; the message says why, for the person choosing it."""


def check_new_password(password: str, *, email: str = "") -> None:
    """Raise `PasswordRejected` unless `password` may be chosen by the owner of `email`."""
    if len(re.sub(" {2,}", " ", password.strip())) < MIN_LENGTH:
        raise PasswordRejected(f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"Use at most {MAX_LENGTH} characters.")
    # Imported here, not at the top: zxcvbn's word lists take some 12 MB in each process that
    # loads them, and a password is chosen rarely (enrolment, a change), not on every request.
    from zxcvbn import zxcvbn

    own_words = [part for part in email.replace("@", " ").replace(".", " ").split() if part]
    estimate = zxcvbn(password[:_ESTIMATED_CHARACTERS], user_inputs=own_words)
    if estimate["score"] < MIN_SCORE:
        feedback = estimate["feedback"]
        advice = " ".join(
            part for part in [feedback.get("warning"), *feedback.get("suggestions", [])] if part
        )
        raise PasswordRejected(
            "This password is too easy to guess (it is common, in breach lists, or a simple "
            "pattern)." + (f" {advice}" if advice else "")
        )
