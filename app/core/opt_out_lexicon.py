"""Every word of a request to stop, as the grammar reads it: concepts and mood, by language.

Pure (it reads one small table shipped with the package, nothing else). The words
come from `opt_out_words`; their inflected forms from `data/opt_out_forms.tsv`, a
table generated from simplemma (<https://github.com/adbar/simplemma>, MIT; its
dictionaries derive from lemmatization-lists, ODbL, and other open sources), the one
lemmatiser that covers English, Spanish, French, Russian and Bulgarian. Its
dictionaries map each form to its lemma; the table keeps the forms of the few hundred
lemmas that matter here (`tools/gen_opt_out_forms.py` regenerates it, and a test
fails when it differs from what the installed simplemma gives). The lexicon
normalises them like every text (no accents, case-folded), so "ENVIEN", "envíen" and
"envien" read alike and a text is read with one dictionary look-up per word.

Why a table rather than simplemma at run time: loading its five dictionaries took
about 2 s and 220 MB at the peak in every process (memory the allocator does not give
back), for some 6,000 forms. Read from the table, the lexicon builds in a tenth of
a second, once per process, on first use or in `warm()`, which the web workers call
before they serve (gunicorn.conf.py); simplemma is a development dependency.

Each word of a text gets a `Reading` per language: its concepts (NEG, WANT, SEND, …)
and its mood (a command, a dictionary form). Words no dictionary knows are tried as
an SMS spelling (`variants`), a verb with "me" glued on ("bórrenme"), a negation
glued on ("непишите") and, from six letters up outside English, one typing slip
away from a known form ("mensages", "сообшения").
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from types import SimpleNamespace

from app.core.keyword_tables import LANGUAGES
from app.core.normalization import normalize
from app.core.opt_out_words import COMMAND_ENDINGS, LANGUAGE_WORDS, NOT_COMMAND_ENDINGS


class Concept(enum.IntFlag):
    """What a word contributes to a request to stop (a word may carry several)."""

    NONE = 0
    NEG = enum.auto()  # no, ne, не
    MORE = enum.auto()  # más, plus, больше, повече, anymore
    NOMORE = enum.auto()  # basta, assez, хватит, стига
    WANT = enum.auto()  # querer, vouloir, хотеть, искам, надо
    RECEIVE = enum.auto()  # recibir, recevoir, получать, получавам
    SEND = enum.auto()  # enviar, écrire, писать, пращам, text, bother
    CALL = enum.auto()  # llamar, appeler, звонить, звъня
    STOP = enum.auto()  # dejar (de), arrêter (de), перестать, спра
    REMOVE = enum.auto()  # borrar, retirer, удалить, махна
    UNSUB = enum.auto()  # desuscribir, désabonner, отписать, отпиша
    LEAVE = enum.auto()  # dejar (en paz), laisser, оставить, оставя
    LEAVE_OFF = enum.auto()  # lâchez-moi, отстаньте, разкарайте се
    ALONE = enum.auto()  # paz, tranquille, покой, мира
    MSG = enum.auto()  # mensaje, sms, сообщение, съобщение
    LIST = enum.auto()  # lista, liste, список, списък
    NUMBER = enum.auto()  # número, numéro, номер
    WRONG = enum.auto()  # equivocado, mauvais, неправильный, грешен
    ME = enum.auto()  # me, moi, меня, ме
    MY = enum.auto()  # mi, mon, мой, моя
    GAP = enum.auto()  # words that may stand between the parts of a request
    SUBJECT = enum.auto()  # él, il, он, той: someone else is the subject
    AUX = enum.auto()  # ha, avez, has: a past tense follows
    BE = enum.auto()  # es, est, это, е
    SUBSCRIPTION = enum.auto()  # suscripción, abonnement, подписка, абонамент
    GIVE = enum.auto()  # dar (de baja)
    EXIT = enum.auto()  # salir, sortir, выйти, изляза
    BAJA = enum.auto()  # "de baja"
    HOW = enum.auto()  # cómo, comment, как: "how do I stop…" asks us to stop


_CONCEPTS_BY_NAME = {concept.name.lower(): int(concept) for concept in Concept if concept.name}

# The same flags as plain ints, for the hot path: IntFlag arithmetic costs ten times more.
C = SimpleNamespace(**{concept.name: int(concept) for concept in Concept if concept.name})

# Concepts that make a language worth reading a text in; the rest only join them up.
ANCHORS = int(
    Concept.WANT
    | Concept.SEND
    | Concept.STOP
    | Concept.REMOVE
    | Concept.UNSUB
    | Concept.LEAVE
    | Concept.LEAVE_OFF
    | Concept.WRONG
    | Concept.NOMORE
    | Concept.EXIT
    | Concept.BAJA
    | Concept.MSG
    | Concept.CALL
    | Concept.NUMBER
    | Concept.SUBSCRIPTION
)
# Only words that carry meaning are corrected for typing slips; "no" and "me" are not.
_FUZZY_CONCEPTS = ANCHORS | C.RECEIVE | C.LIST | C.NUMBER
_FUZZY_MIN_LENGTH = 6
_FUZZY_LANGUAGES = ("es", "fr", "ru", "bg")


@dataclass(frozen=True, slots=True)
class Reading:
    """One word as one language's grammar sees it.

    `command`: the word can be an affirmative command or a dictionary form
    ("dejen", "arrêtez", "удалите", "спрете"); `negative_command`: it can follow a
    negation as a request ("no me envíes", "не пишите"); `base`: a dictionary form
    (infinitive, or a Bulgarian first person), as in "quiero dejar de recibir".
    """

    word: str
    concepts: int = 0  # Concept flags
    command: bool = False
    negative_command: bool = False
    base: bool = False

    def has(self, concepts: int) -> bool:
        return bool(self.concepts & concepts)


def _mood(language: str, word: str, lemma: str) -> tuple[bool, bool, bool]:
    """(command, negative_command, base) of `word`, a form of `lemma`, from its ending."""
    if word == lemma:
        return True, True, True
    verb_class = ""
    if language == "es":
        verb_class = "ar" if lemma.endswith("ar") else "er"
    if any(word.endswith(e) for e in NOT_COMMAND_ENDINGS[language].get(verb_class, ())):
        return False, False, False
    command = any(word.endswith(e) for e in COMMAND_ENDINGS[language].get(verb_class, ()))
    negative = command
    if language == "es":
        negative = any(word.endswith(e) for e in COMMAND_ENDINGS["es"][f"{verb_class}_negative"])
    return command, negative, False


def _concepts(names: str) -> int:
    concepts = 0
    for name in names.split():
        concepts |= _CONCEPTS_BY_NAME[name]
    return concepts


def lemma_concepts(language: str) -> dict[str, int]:
    """{lemma: its Concept flags} for the lemmas `opt_out_words` lists in `language`."""
    concepts: dict[str, int] = {}
    for name, lemmas in LANGUAGE_WORDS[language].lemmas.items():
        for lemma in lemmas.split():
            concepts[lemma] = concepts.get(lemma, 0) | _concepts(name)
    return concepts


FORMS_TABLE = "data/opt_out_forms.tsv"
_TABLE_HEADER = (
    "# Inflected forms of the opt-out grammar's lemmas: language, form, lemma.\n"
    "# GENERATED by tools/gen_opt_out_forms.py from simplemma's dictionaries\n"
    "# (MIT; data ODbL and other open licences, see README); do not edit by hand.\n"
)


def table_from_simplemma() -> str:
    """The text of `FORMS_TABLE` as the installed simplemma gives it (a dev dependency)."""
    lines = []
    for language in LANGUAGES:
        pairs = set(dictionary_forms(language, lemma_concepts(language)))
        lines += [f"{language}\t{form}\t{lemma}" for form, lemma in sorted(pairs)]
    return _TABLE_HEADER + "\n".join(lines) + "\n"


def shipped_forms() -> dict[str, list[tuple[str, str]]]:
    """{language: [(form, lemma), ...]} from the table shipped with the package."""
    forms: dict[str, list[tuple[str, str]]] = {language: [] for language in LANGUAGES}
    text = resources.files("app.core").joinpath(FORMS_TABLE).read_text("utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            language, form, lemma = line.split("\t")
            forms[language].append((form, lemma))
    return forms


def dictionary_forms(language: str, lemmas: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(form, lemma) for every form simplemma's dictionary of `language` gives these lemmas.

    Only `tools/gen_opt_out_forms.py` and the tests call it: the service reads the table.
    """
    from simplemma.strategies.dictionaries import DefaultDictionaryFactory

    wanted = set(lemmas)
    # A private factory, so the dictionary (hundreds of thousands of forms) is released
    # as soon as the lexicon is built instead of staying in simplemma's process-wide cache.
    mapping = DefaultDictionaryFactory(cache_max_size=1).get_dictionary(language)
    raw = getattr(mapping, "_dict", None)
    if isinstance(raw, dict):  # simplemma 2.x keeps bytes; decoding only the hits is 3x faster
        encoded = {lemma.encode(): lemma for lemma in wanted}
        for form, lemma in raw.items():
            if lemma in encoded:
                yield form.decode(), encoded[lemma]
        return
    for form, lemma in mapping.items():
        if lemma in wanted:
            yield form, lemma


class Lexicon:
    """Word -> {language: Reading}, with the fall-backs for words no dictionary knows."""

    def __init__(self, forms: Mapping[str, Iterable[tuple[str, str]]] | None = None):
        """`forms` (language -> (form, lemma) pairs) replaces the shipped table in tests."""
        if forms is None:
            forms = shipped_forms()
        self.readings: dict[str, dict[str, Reading]] = {}
        self.phrases: dict[str, list[tuple[list[str], str, Reading]]] = {}
        self.variants: dict[str, dict[str, str]] = {}
        for language in LANGUAGES:
            self._add_language(language, forms)
        # Some 45,000 keys of one or two entries each: tuples, where sets would cost four
        # times the memory in every process (and the allocator keeps a peak it once reached).
        self._fuzzy: dict[str, tuple[tuple[str, str], ...]] = {}
        for word, by_language in self.readings.items():
            for language, reading in by_language.items():
                if (
                    language in _FUZZY_LANGUAGES
                    and len(word) >= _FUZZY_MIN_LENGTH
                    and reading.has(_FUZZY_CONCEPTS)
                ):
                    pair = (language, word)
                    for key in {word, *_deletions(word)}:
                        self._fuzzy[key] = (*self._fuzzy.get(key, ()), pair)
        self.cached_read = lru_cache(maxsize=16_384)(self._read_uncached)
        self.cached_near = lru_cache(maxsize=4_096)(self._read_near)

    def _merge(self, language: str, word: str, reading: Reading) -> None:
        by_language = self.readings.setdefault(word, {})
        known = by_language.get(language)
        if known is not None:
            reading = Reading(
                word,
                known.concepts | reading.concepts,
                known.command or reading.command,
                known.negative_command or reading.negative_command,
                known.base or reading.base,
            )
        by_language[language] = reading

    def _add_language(self, language: str, forms: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        data = LANGUAGE_WORDS[language]
        concepts_of = lemma_concepts(language)
        pairs = list(forms[language])
        pairs += [(lemma, lemma) for lemma in concepts_of]
        ambiguous = set(normalize(data.ambiguous).split())
        for form, lemma in pairs:
            word = normalize(form)
            if not word or " " in word or word in ambiguous or lemma not in concepts_of:
                continue
            command, negative, base = _mood(language, word, normalize(lemma))
            self._merge(language, word, Reading(word, concepts_of[lemma], command, negative, base))
        for name, words in data.words.items():
            for word in normalize(words).split():
                self._merge(language, word, Reading(word, _concepts(name), True, True, True))
        for phrase, names in data.phrases.items():
            parts = normalize(phrase).split(" ")
            reading = Reading(" ".join(parts), _concepts(names), True, True, True)
            self.phrases.setdefault(parts[0], []).append((parts, language, reading))
        for variant, meant in data.variants.items():
            self.variants.setdefault(normalize(variant), {})[language] = normalize(meant)

    def read(self, word: str) -> Mapping[str, tuple[Reading, ...]]:
        """{language: the readings of `word` (two when a pronoun is glued on)}; cached.

        A word none of this knows may be a typing slip: see `read_near`.
        """
        return self.cached_read(word)

    def read_near(self, word: str) -> Mapping[str, tuple[Reading, ...]]:
        """{language: the reading of the known form one typing slip from `word`}; cached.

        Dearer than `read` (a look-up per letter), so the grammar asks only for words
        next to known ones ("no quiero mas mensages"), never for a whole text of unknowns.
        """
        return self.cached_near(word)

    def _read_near(self, word: str) -> dict[str, tuple[Reading, ...]]:
        result: dict[str, tuple[Reading, ...]] = {}
        if len(word) >= _FUZZY_MIN_LENGTH:
            for language, near in self._near(word):
                result.setdefault(language, (replace(self.readings[near][language], word=word),))
        return result

    def _read_uncached(self, word: str) -> dict[str, tuple[Reading, ...]]:
        known = self.readings.get(word)
        result: dict[str, tuple[Reading, ...]] = {}
        if known:
            result = {language: (reading,) for language, reading in known.items()}
        for language, meant in self.variants.get(word, {}).items():
            reading = self.readings.get(meant, {}).get(language)
            if reading is not None:  # the rule names the word as typed: "kiero", not "quiero"
                result.setdefault(language, (replace(reading, word=word),))
        if result:
            return result
        for language in LANGUAGES:
            data = LANGUAGE_WORDS[language]
            for pronoun in data.enclitics:  # "bórrenme" is "borren" + "me"
                stem = word[: -len(pronoun)]
                if word.endswith(pronoun) and len(stem) >= 2:
                    reading = self._known_or_near(stem, language)
                    pronoun_reading = self.readings.get(pronoun, {}).get(language)
                    if reading is not None and pronoun_reading is not None:
                        result[language] = (reading, pronoun_reading)
            negation = data.glued_negation  # "непишите" is "не пишите"
            if negation and word.startswith(negation) and len(word) > len(negation) + 2:
                reading = self.readings.get(word[len(negation) :], {}).get(language)
                if reading is not None and reading.has(C.SEND | C.WANT):
                    result[language] = (self.readings[negation][language], reading)
        return result

    def _known_or_near(self, word: str, language: str) -> Reading | None:
        reading = self.readings.get(word, {}).get(language)
        if reading is None and len(word) >= _FUZZY_MIN_LENGTH:
            for candidate_language, near in self._near(word):
                if candidate_language == language:
                    return self.readings[near][language]
        return reading

    def _near(self, word: str) -> list[tuple[str, str]]:
        """Known forms one typing slip (insert, delete, substitute, swap) away from `word`."""
        found: set[tuple[str, str]] = set()
        for key in (word, *_deletions(word)):
            found.update(self._fuzzy.get(key, ()))
        return sorted((lang, near) for lang, near in found if _one_edit_apart(word, near))


def _deletions(word: str) -> Iterator[str]:
    for i in range(len(word)):
        yield word[:i] + word[i + 1 :]


def _one_edit_apart(a: str, b: str) -> bool:
    """Are `a` and `b` at most one insertion, deletion, substitution or swap apart?"""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    if len(a) == len(b):
        if a[start + 1 :] == b[start + 1 :]:
            return True  # substitution
        swapped = a[start : start + 2] == b[start : start + 2][::-1]
        return swapped and a[start + 2 :] == b[start + 2 :]
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[start + 1 :] == shorter[start:]


_lexicon: Lexicon | None = None
_lock = threading.Lock()


def lexicon() -> Lexicon:
    """The process's lexicon, built on first use (a tenth of a second; see the module docstring)."""
    global _lexicon
    if _lexicon is None:
        with _lock:
            if _lexicon is None:
                _lexicon = Lexicon()
    return _lexicon


def warm() -> None:
    """Build the lexicon now, so the first text a worker reads does not wait for it."""
    lexicon()
