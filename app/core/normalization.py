"""How every keyword rule sees a text: NFKC, case-folded, no accents, single spaces.

Pure. Everything that reads a subscriber's text (the keyword tables, the opt-out
grammar, its lexicon) goes through `normalize`, so a rule is a function of the
normalised words only and `classify(normalize(text)) == classify(text)` holds.
"""

from __future__ import annotations

import unicodedata


class _CharacterTable(dict):
    """A `str.translate` table filled as characters are met: combining marks (Mn) are
    dropped; letters and digits kept (or, with `words`, everything else becomes a space).

    One C-level look-up a character instead of a Python call: a 60 KB text in a few ms.
    At most `_TABLE_MAX` characters are remembered, so no text can grow it without bound.
    """

    def __init__(self, words: bool):
        super().__init__()
        self.words = words

    def __missing__(self, code: int) -> int | str | None:
        category = unicodedata.category(chr(code))
        if category == "Mn":  # combining accents: ARRÊT -> ARRET
            value: int | str | None = None
        elif not self.words or category[0] in "LN":
            value = code
        else:
            value = " "
        if len(self) < _TABLE_MAX:
            self[code] = value
        return value


_TABLE_MAX = 20_000
_DROP_MARKS = _CharacterTable(words=False)
_WORDS_ONLY = _CharacterTable(words=True)


def normalize(text: str) -> str:
    """The text as keywords are matched: NFKC, case-folded, no accents, single spaces."""
    # Accents go before case-folding too: a few combining marks fold into letters
    # (U+0345 becomes "ι"), which would glue a stray letter onto "STOP".
    unaccented = unicodedata.normalize("NFKD", text).translate(_DROP_MARKS)
    folded = unicodedata.normalize("NFKC", unaccented).casefold()
    words = unicodedata.normalize("NFD", folded).translate(_WORDS_ONLY).split()
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
