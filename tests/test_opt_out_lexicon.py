"""How words are read (app.core.opt_out_lexicon): simplemma's forms, moods and fall-backs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from importlib import resources

import pytest

from app.core.keyword_tables import LANGUAGES
from app.core.opt_out_lexicon import (
    FORMS_TABLE,
    C,
    Lexicon,
    _mood,
    _one_edit_apart,
    dictionary_forms,
    lemma_concepts,
    lexicon,
    shipped_forms,
    table_from_simplemma,
)
from app.core.opt_out_words import LANGUAGE_WORDS
from tests.servers import refusing_imports

# Lemmas simplemma's dictionaries do not hold; their forms are listed as words instead.
NOT_IN_SIMPLEMMA = {
    "es": {"desinscribir", "spamear"},
    "fr": {"désinscrire", "spammer", "texter", "texto"},
    "ru": {"отписаться", "смска", "спамить"},
    "bg": {"отпиша", "разкарам", "спамя", "тормозя"},
}


@pytest.mark.parametrize("language", sorted(LANGUAGE_WORDS))
def test_every_lemma_gets_its_forms_from_simplemma(language):
    """Fails when a simplemma release drops a lemma the grammar relies on."""
    lemmas = set(lemma_concepts(language))
    found = {lemma for _, lemma in dictionary_forms(language, lemmas)}
    assert lemmas - found == NOT_IN_SIMPLEMMA.get(language, set())


@pytest.mark.parametrize(
    ("language", "word"),
    [
        ("es", "envien"),  # subjunctive, accents stripped
        ("es", "escribiendo"),
        ("fr", "recevrez"),
        ("ru", "присылаите"),  # присылайте: й reads as и after normalisation
        ("ru", "сообщениями"),
        ("bg", "изпращаите"),
        ("bg", "съобщенията"),
    ],
)
def test_inflected_forms_are_known(language, word):
    assert language in lexicon().read(word)


@pytest.mark.parametrize(
    ("language", "word", "lemma", "command", "negative_command"),
    [
        ("es", "envien", "enviar", True, True),  # no me envíen / envíen
        ("es", "envia", "enviar", True, False),  # envía (tú), but "no me envía" is a report
        ("es", "escriban", "escribir", True, True),
        ("es", "enviaron", "enviar", False, False),
        ("es", "escribia", "escribir", False, False),
        ("fr", "envoyez", "envoyer", True, True),
        ("fr", "envoyait", "envoyer", False, False),
        ("ru", "пишите", "писать", True, True),
        ("ru", "писали", "писать", False, False),
        ("ru", "пишет", "писать", False, False),
        ("bg", "пишете", "пиша", True, True),
        ("bg", "пишат", "пиша", False, False),
        ("bg", "писахте", "пиша", False, False),
    ],
)
def test_mood_is_read_from_the_form(language, word, lemma, command, negative_command):
    assert _mood(language, word, lemma)[:2] == (command, negative_command)


def test_a_dictionary_form_is_a_base_form():
    assert _mood("es", "enviar", "enviar") == (True, True, True)


def test_a_pronoun_glued_on_is_read_apart():
    [reading, pronoun] = lexicon().read("borrenme")["es"]
    assert reading.has(C.REMOVE) and reading.command and pronoun.has(C.ME)


def test_a_negation_glued_on_is_read_apart():
    [negation, verb] = lexicon().read("непишите")["ru"]
    assert negation.has(C.NEG) and verb.has(C.SEND) and verb.negative_command


@pytest.mark.parametrize(
    ("typed", "language", "meant"),
    [
        ("mensjaes", "es", "mensajes"),
        ("сообщенея", "ru", "сообщения"),
        ("recevoire", "fr", "recevoir"),
    ],
)
def test_one_typing_slip_is_forgiven_in_long_words(typed, language, meant):
    assert language not in lexicon().read(typed)  # a slip is looked up only near known words
    [reading] = lexicon().read_near(typed)[language]
    assert reading == replace(lexicon().read(meant)[language][0], word=typed)


def test_english_and_short_words_are_never_guessed_at():
    assert "en" not in lexicon().read_near("spending")  # one letter from "sending"
    assert lexicon().read_near("tezt") == {}


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [
        ("stop", "stop", True),
        ("stop", "sotp", True),
        ("stop", "stopp", True),
        ("stop", "stp", True),
        ("stop", "step", True),
        ("stop", "spot", False),
        ("abxd", "aybd", False),
        ("stop", "st", False),
    ],
)
def test_one_edit_apart(a, b, near):
    assert _one_edit_apart(a, b) is near
    assert _one_edit_apart(b, a) is near


def test_the_lexicon_can_be_built_from_any_mapping_of_forms():
    """The slower, public simplemma path (and a test double) give the same readings."""
    forms = {"es": [("envíen", "enviar"), ("mensajes", "mensaje")], "en": [], "fr": []}
    forms |= {"ru": [], "bg": []}
    small = Lexicon(forms)
    assert small.read("envien")["es"][0].has(C.SEND)
    assert small.read("mensajes")["es"][0].has(C.MSG)
    assert "es" not in small.read("manden")


def test_the_shipped_table_is_what_simplemma_gives():
    """Fails when a lemma is added to opt_out_words or simplemma changes without
    `tools/gen_opt_out_forms.py` being run: the service would miss the new forms."""
    shipped = resources.files("app.core").joinpath(FORMS_TABLE).read_text("utf-8")
    assert shipped == table_from_simplemma()


def test_the_table_reads_every_word_as_simplemma_would():
    """The lexicon the service builds from the table is the one simplemma's dictionaries give."""
    from_simplemma = Lexicon(
        {
            language: list(dictionary_forms(language, lemma_concepts(language)))
            for language in LANGUAGES
        }
    )
    shipped = Lexicon()
    assert sum(len(pairs) for pairs in shipped_forms().values()) > 5_000
    assert shipped.readings == from_simplemma.readings
    assert shipped.variants == from_simplemma.variants


def test_the_service_reads_opt_outs_without_simplemma():
    """simplemma is a development dependency: a deployment without it still reads every
    language's plain-language opt-outs (here with simplemma's import refused)."""
    script = refusing_imports("simplemma") + textwrap.dedent(
        """
        from app.core.keywords import classify
        for text in ("No quiero recibir más mensajes", "Je ne veux plus recevoir de messages",
                     "Не хочу получать сообщения", "Не ми пращайте повече съобщения"):
            print(classify(text).intent)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["opt_out"] * 4
