"""How every keyword rule sees a text: NFKC, case-folded, no accents, single spaces.

Pure. Everything that reads a subscriber's text (the keyword tables, the opt-out
grammar, its lexicon) goes through `normalize`, so a rule is a function of the
normalised words only and `classify(normalize(text)) == classify(text)` holds.
"""

from __future__ import annotations

import unicodedata


def normalize(text: str) -> str:
    """The text as keywords are matched: NFKC, case-folded, no accents, single spaces."""
    # Accents go before case-folding too: a few combining marks fold into letters
    # (U+0345 becomes "ι"), which would glue a stray letter onto "STOP".
    compatible = unicodedata.normalize("NFKD", text)
    unaccented = "".join(char for char in compatible if unicodedata.category(char) != "Mn")
    folded = unicodedata.normalize("NFKC", unaccented).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    words: list[str] = []
    current: list[str] = []
    for char in decomposed:
        category = unicodedata.category(char)
        if category == "Mn":  # combining accents: ARRÊT -> ARRET
            continue
        if category[0] in "LN":
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    words = _join_spelled_out(words)
    return unicodedata.normalize("NFC", " ".join(words))


def _join_spelled_out(words: list[str]) -> list[str]:
    """'S T O P' and 'S.T.O.P.' read as one word when every word is a single letter."""
    if len(words) >= 3 and all(len(word) == 1 and word.isalpha() for word in words):
        return ["".join(words)]
    return words


def tokens(text: str) -> list[str]:
    """The normalised words of `text`."""
    normalized = normalize(text)
    return normalized.split(" ") if normalized else []
