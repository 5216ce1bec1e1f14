"""The opt-out corpus (tests/data/opt_outs_<language>.toml) read by the classifier itself.

The corpus is the team's: requests to stop and look-alikes written the way people
text, one file per language. The targets are the issue's: recall on requests of at
least 98% in every language, no look-alike opted out, and at most 3% of ordinary
English conversation sent to review. The conversation comes from the public
ChatterBot corpus (`chatterbot-corpus` on PyPI, BSD-3-Clause), read from the
installed package at test time and never copied into this repository.
`bench/classifier.py` prints the same figures with precision.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.core.keywords import LANGUAGES, OPT_OUT, classify

CORPUS = Path(__file__).parent / "data"
RECALL_TARGET = 0.98
REVIEW_LOAD_TARGET = 0.03


def corpus(language: str) -> dict[str, list[str]]:
    with open(CORPUS / f"opt_outs_{language}.toml", "rb") as file:
        return tomllib.load(file)


def conversation(language: str = "english") -> list[str]:
    """Every distinct line of the ChatterBot corpus in `language`, from the installed package."""
    yaml = pytest.importorskip("yaml")
    from chatterbot_corpus.corpus import DATA_DIRECTORY

    lines: list[str] = []
    for path in sorted(Path(DATA_DIRECTORY, language).glob("*.yml")):
        for dialogue in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            lines.extend(line for line in dialogue if isinstance(line, str))
    return list(dict.fromkeys(lines))


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_corpus_has_enough_texts_in_every_language(language):
    texts = corpus(language)
    assert len(set(texts["requests"])) >= 50
    assert len(set(texts["look_alikes"])) >= 30
    assert not set(texts["requests"]) & set(texts["look_alikes"])


@pytest.mark.parametrize("language", LANGUAGES)
def test_requests_to_stop_are_read_as_opt_outs(language):
    requests = corpus(language)["requests"]
    missed = [text for text in requests if classify(text).intent != OPT_OUT]
    recall = 1 - len(missed) / len(requests)
    assert recall >= RECALL_TARGET, f"recall {recall:.1%}, missed: {missed}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_requests_in_words_are_read_in_their_language(language):
    """The reply goes out in the language of the request (СТОП is Russian and Bulgarian)."""
    wrong = [
        text
        for text in corpus(language)["requests"]
        if (result := classify(text)).intent == OPT_OUT and language not in result.languages
    ]
    assert wrong == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_look_alike_is_opted_out(language):
    opted_out = [
        (text, classify(text).rule)
        for text in corpus(language)["look_alikes"]
        if classify(text).intent == OPT_OUT
    ]
    assert opted_out == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_known_over_reach_is_still_an_opt_out(language):
    """Texts listed as `over_reach` opt out by an older rule; when one stops, move it."""
    for text in corpus(language).get("over_reach", []):
        assert classify(text).intent == OPT_OUT, f"{text!r} no longer opts out: a look-alike now"


@pytest.mark.parametrize(
    "text",
    ["el autobús no para aquí", "le bus ne s'arrête pas ici", "Надо стоп-кран починить", "спирка"],
)
def test_the_issues_look_alikes_are_never_opt_outs(text):
    assert classify(text).intent != OPT_OUT


def test_ordinary_english_conversation_is_not_opted_out_and_rarely_reviewed():
    lines = conversation("english")
    assert len(lines) >= 1000
    results = [classify(line) for line in lines]
    opted_out = [line for line, r in zip(lines, results, strict=True) if r.intent == OPT_OUT]
    flagged = [line for line, r in zip(lines, results, strict=True) if r.possible_opt_out]
    assert opted_out == []
    assert len(flagged) / len(lines) <= REVIEW_LOAD_TARGET, flagged


@pytest.mark.parametrize("language", ["spanish", "french", "russian"])
def test_ordinary_conversation_in_other_languages_is_not_opted_out(language):
    lines = conversation(language)
    assert lines
    assert [line for line in lines if classify(line).intent == OPT_OUT] == []
