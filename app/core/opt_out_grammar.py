"""The grammar of a request to stop, read the same way in every language.

Pure. `read_opt_out(words)` looks, in the normalised words of a text, for the
shapes a request to stop takes, whatever the words (see `opt_out_lexicon` for how
each word is read, by language):

| pattern | shape | for example |
|---|---|---|
| `unsubscribe` | any form of an unsubscribe verb | "desuscríbanme", "отпишите меня" |
| `cancel_subscription` | cancel + subscription | "résiliez mon abonnement" |
| `wrong_number` | wrong + number | "se equivocaron de número", "ошиблись номером" |
| `not_my_number` | not + my number | "ce n'est pas mon numéro", "не е моят номер" |
| `leave_alone` | leave + me + alone; leave off | "déjenme en paz", "отстаньте" |
| `remove_me` | remove + me / my number (+ list) | "bórrenme de su lista", "махнете ме" |
| `de_baja` | dar + me + de baja | "denme de baja", "me dan de baja por favor" |
| `leave_list` | leave + list | "quiero salir de la lista", "выйти из рассылки" |
| `stop_sending` | stop + send / messages | "dejen de enviarme", "спрете да ми пишете" |
| `dont_send` | not + (me) + send, as a request | "ne m'écrivez plus", "не пишите мне" |
| `no_want` | not + want (+ receive) + messages | "ya no quiero recibir mensajes" |
| `no_more` | no more / enough + messages | "basta de mensajes", "хватит смс" |

Only "gap" words (articles, pronouns, "de", "да", "please"…) may stand between the
parts, a few words at most, so "no quiero perder tus mensajes" is not "no quiero
mensajes". Commands are told from reports by their form: "no me envíen" is a
request, "no me enviaron el código" a complaint; "he/she/they" before the verb
("il ne m'écrit plus") or a past auxiliary ("m'avez retiré") makes it a report too.

A shape met in full is an opt-out. A shape met in part (a complaint about
messages, "no quiero" alone, a command to stop without its object) is a possible
opt-out: flagged for staff review, never acted on. Nothing here uses regular
expressions: each rule walks a few words either side of an anchor word, so a text
is read in time linear in its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.core.keyword_tables import LANGUAGES
from app.core.opt_out_lexicon import ANCHORS, C, Lexicon, Reading, lexicon

_GAP = C.GAP | C.ME | C.MY | C.MORE
_STOPPING = C.STOP | C.REMOVE
_NOT_ADDRESSED = C.SUBJECT | C.AUX
_TRIGGERS = (
    C.UNSUB | C.SUBSCRIPTION | C.WRONG | C.MY | C.LEAVE | C.LEAVE_OFF | C.REMOVE | C.BAJA
) | (C.EXIT | C.STOP | C.NEG | C.ME | C.WANT | C.NOMORE)
_SHORT_TEXT = 5  # "ya no quiero", "не хочу": too short to be about anything but us


@dataclass(frozen=True)
class GrammarMatch:
    """A request to stop (`opt_out`) or something that may be one (review)."""

    opt_out: bool
    pattern: str
    language: str
    words: str

    @property
    def rule(self) -> str:
        """The rule kept in the ledger: `opt_out.<pattern>.<language>:<the words that matched>`.

        Only lexicon words (or a word one typing slip from one) ever stand in it: the
        gaps crossed are lexicon words too, so never a name or a number from the text.
        """
        return f"opt_out.{self.pattern}.{self.language}:{self.words}"


def read_opt_out(words: Sequence[str], lex: Lexicon | None = None) -> GrammarMatch | None:
    """The first request to stop in `words` (normalised), else the first possible one."""
    lex = lex or lexicon()
    possible: GrammarMatch | None = None
    for language, readings in _readings_by_language(words, lex):
        match = _Reader(language, readings).match()
        if match is not None and match.opt_out:
            return match
        possible = possible or match
    return possible


def _readings_by_language(words: Sequence[str], lex: Lexicon):
    """(language, readings) for each language in which some word is an anchor, in order."""
    per_word = [lex.read(word) for word in words]
    _read_slips_near_known_words(words, per_word, lex)
    anchored: set[str] = set()
    for by_language in per_word:
        for language, readings in by_language.items():
            if language not in anchored and any(r.has(ANCHORS) for r in readings):
                anchored.add(language)
    phrase_starts = [i for i, word in enumerate(words) if word in lex.phrases]
    for i in phrase_starts:
        for parts, language, reading in lex.phrases[words[i]]:
            if reading.has(ANCHORS) and list(words[i : i + len(parts)]) == parts:
                anchored.add(language)
    for language in LANGUAGES:
        if language not in anchored:
            continue
        if not phrase_starts:  # the common case, in one pass
            yield language, [r for by in per_word for r in (by.get(language) or _UNKNOWN)]
            continue
        readings: list[Reading] = []
        i = 0
        while i < len(words):
            phrase = _phrase_at(words, i, language, lex) if words[i] in lex.phrases else None
            if phrase is not None:
                readings.append(phrase[1])
                i += phrase[0]
                continue
            readings.extend(per_word[i].get(language) or _UNKNOWN)
            i += 1
        yield language, readings


_MEANINGFUL = ANCHORS | C.NEG | C.RECEIVE | C.LIST
_SLIP_WINDOW = 4


def _read_slips_near_known_words(words: Sequence[str], per_word: list, lex: Lexicon) -> None:
    """Unknown words within a few words of a meaningful one may be typing slips of a lexicon
    word; only those are looked up (a text of unknown words costs no more than a look-up each).
    """
    known = [
        i
        for i, by_language in enumerate(per_word)
        if any(r.concepts & _MEANINGFUL for readings in by_language.values() for r in readings)
    ]
    tried: set[int] = set()
    for i in known:
        for j in range(max(0, i - _SLIP_WINDOW), min(len(words), i + _SLIP_WINDOW + 1)):
            if j not in tried and not per_word[j]:
                tried.add(j)
                per_word[j] = lex.read_near(words[j])


# A word the language does not know: no concept, so no rule ever crosses or names it.
_UNKNOWN = (Reading(""),)


def _phrase_at(words: Sequence[str], i: int, language: str, lex: Lexicon):
    for parts, phrase_language, reading in lex.phrases[words[i]]:
        if phrase_language == language and all(
            i + k < len(words) and words[i + k] == part for k, part in enumerate(parts)
        ):
            return len(parts), reading
    return None


class _Reader:
    """The patterns of the module docstring, over one language's readings of a text."""

    def __init__(self, language: str, readings: list[Reading]):
        self.language = language
        self.readings = readings
        meaningful = [i for i, r in enumerate(readings) if not r.concepts & (_GAP | C.NEG)]
        # Where the text stops being gap words, from either end ("no sms", "remove me please").
        self._first_meaningful = meaningful[0] if meaningful else len(readings)
        self._last_meaningful = meaningful[-1] if meaningful else -1

    def match(self) -> GrammarMatch | None:
        possible = None
        triggered = [(i, r) for i, r in enumerate(self.readings) if r.concepts & _TRIGGERS]
        for trigger, pattern in (
            (C.UNSUB | C.SUBSCRIPTION, self._unsubscribe),
            (C.WRONG | C.MY, self._wrong_number),
            (C.LEAVE | C.LEAVE_OFF, self._leave_alone),
            (C.REMOVE | C.BAJA | C.EXIT, self._remove_me),
            (C.STOP, self._stop_sending),
            (C.NEG | C.ME, self._dont_send),
            (C.WANT, self._no_want),
            (C.NOMORE | C.NEG, self._no_more),
        ):
            for i, reading in triggered:
                if not reading.concepts & trigger:
                    continue
                match = pattern(i, reading)
                if match is not None and match.opt_out:
                    return match
                possible = possible or match
        return possible

    # -- helpers -------------------------------------------------------------------------------

    def _found(self, opt_out: bool, pattern: str, start: int, end: int) -> GrammarMatch:
        words = " ".join(r.word for r in self.readings[min(start, end) : max(start, end) + 1])
        return GrammarMatch(opt_out, pattern, self.language, words)

    def _scan(self, start: int, step: int, wanted: int, gaps: int = _GAP, limit: int = 4):
        """The first word from `start` (exclusive) towards `step` that is `wanted`, crossing
        only `gaps`, at most `limit` words; else None."""
        j = start + step
        while 0 <= j < len(self.readings) and abs(j - start) <= limit:
            reading = self.readings[j]
            if reading.has(wanted):
                return j
            if not reading.has(gaps):
                return None
            j += step
        return None

    def _rest_is_gaps(self, after: int) -> bool:
        return after >= self._last_meaningful

    def _addressed_to_us(self, i: int) -> bool:
        """No third person or past auxiliary stands just before the verb at `i`."""
        before = self.readings[max(0, i - 3) : i]
        return not any(r.has(_NOT_ADDRESSED) for r in before)

    # -- patterns ------------------------------------------------------------------------------

    def _unsubscribe(self, i: int, reading: Reading):
        if reading.has(C.UNSUB):
            return self._found(True, "unsubscribe", i, i)
        if reading.has(C.SUBSCRIPTION):
            j = self._scan(i, -1, _STOPPING, limit=3)
            if j is not None and self.readings[j].command and self._addressed_to_us(j):
                return self._found(True, "cancel_subscription", j, i)
        return None

    def _wrong_number(self, i: int, reading: Reading):
        gaps = C.GAP | C.MY | C.BE | C.AUX
        if reading.has(C.WRONG):
            for step in (1, -1):
                j = self._scan(i, step, C.NUMBER, gaps, limit=3)
                if j is not None:
                    return self._found(True, "wrong_number", i, j)
        if reading.has(C.MY) and i + 1 < len(self.readings):
            number = self.readings[i + 1]
            after = self.readings[i + 2] if i + 2 < len(self.readings) else None
            negated = self._scan(i, -1, C.NEG, C.BE | C.GAP, limit=3)
            ends = after is None or not after.has(C.GAP)  # "not my number", not "my number of"
            if number.has(C.NUMBER) and negated is not None and ends:
                return self._found(True, "not_my_number", negated, i + 1)
        return None

    def _leave_alone(self, i: int, reading: Reading):
        if reading.has(C.LEAVE_OFF) and reading.command:
            me = self._scan(i, 1, C.ME, C.GAP, limit=2)
            if me is not None or self.language in ("ru", "bg"):
                return self._found(True, "leave_alone", i, me if me is not None else i)
        if reading.has(C.LEAVE) and reading.command:
            me = self._scan(i, 1, C.ME, C.GAP, limit=2)
            if me is None:
                me = self._scan(i, -1, C.ME, C.GAP, limit=2)
            alone = self._scan(max(i, me or i), 1, C.ALONE, C.GAP | C.ME, limit=3)
            if me is not None and alone is not None:
                return self._found(True, "leave_alone", min(i, me), alone)
        return None

    def _remove_me(self, i: int, reading: Reading):
        if reading.has(C.BAJA):
            j = self._scan(i, -1, C.GIVE | C.ME, C.GAP | C.WANT, limit=3)
            return self._found(j is not None, "de_baja", j if j is not None else i, i)
        if reading.has(C.EXIT) and (reading.command or reading.base):
            j = self._scan(i, 1, C.LIST | C.SUBSCRIPTION, limit=3)
            if j is not None:
                return self._found(True, "leave_list", i, j)
        if not reading.has(C.REMOVE):
            return None
        request = (reading.command or reading.base) and self._addressed_to_us(i)
        number = self._scan(i, 1, C.NUMBER | C.LIST, limit=3)
        if number is not None:
            return self._found(request, "remove_me", i, number)
        me = self._scan(i, 1, C.ME, C.GAP, limit=2)
        if me is None:
            me = self._scan(i, -1, C.ME, C.GAP | C.NEG, limit=2)
        if me is None:
            return None
        where = self._scan(max(i, me), 1, C.LIST | C.NUMBER | C.SUBSCRIPTION, limit=5)
        if where is not None:
            return self._found(request, "remove_me", min(i, me), where)
        return self._found(request and self._rest_is_gaps(max(i, me)), "remove_me", i, me)

    def _stop_sending(self, i: int, reading: Reading):
        if not reading.has(C.STOP):
            return None
        j = self._scan(i, 1, C.SEND | C.MSG | C.RECEIVE, limit=4)
        if j is None:
            return None
        asked = self._scan(i, -1, C.HOW, C.GAP | C.ME, limit=3) is not None  # "cómo dejo de…"
        request = asked or ((reading.command or reading.base) and self._addressed_to_us(i))
        if self.readings[j].has(C.SEND | C.MSG):
            return self._found(request, "stop_sending", i, j)
        # "dejar de recibir": the subscriber is the one receiving, so only "(I want) to stop
        # receiving" asks us anything; "dejé de recibir" (I stopped receiving) is a report.
        return self._found(asked or (request and reading.base), "stop_sending", i, j)

    def _dont_send(self, i: int, reading: Reading):
        if self.language == "fr" and reading.has(C.ME) and i + 2 < len(self.readings):
            verb, negation = self.readings[i + 1], self.readings[i + 2]
            if verb.has(C.SEND) and verb.command and negation.has(C.NEG):  # "m'envoyez plus"
                return self._found(self._addressed_to_us(i), "dont_send", i, i + 2)
        if not reading.has(C.NEG):
            return None
        j = self._scan(i, 1, C.SEND | C.CALL, _GAP | C.NEG, limit=4)
        if j is None:
            return None
        verb = self.readings[j]
        if not verb.has(C.SEND):
            return self._found(False, "dont_send", i, j)
        request = verb.negative_command and self._addressed_to_us(i)
        me_before = any(r.has(C.ME) for r in self.readings[i:j])
        after = self._scan(j, 1, C.ME | C.MSG | C.MORE | C.NUMBER, limit=3)
        confirmed = me_before or after is not None or self._rest_is_gaps(j)
        return self._found(request and confirmed, "dont_send", i, j if after is None else after)

    def _no_want(self, i: int, reading: Reading):
        if not reading.has(C.WANT):
            return None
        negation = self._scan(i, -1, C.NEG, C.GAP | C.ME | C.MORE | C.SUBJECT, limit=3)
        if negation is None and self.language == "fr":
            negation = self._scan(i, 1, C.NEG, C.GAP, limit=2)  # "je veux plus", "veux pas"
        if negation is None:
            return None
        objects = C.GAP | C.ME | C.MY | C.MORE | C.NOMORE | C.NEG | C.RECEIVE
        j = self._scan(i, 1, C.MSG | C.SEND, objects, limit=8)
        if j is not None:
            return self._found(True, "no_want", min(i, negation), j)
        j = self._scan(min(i, negation), -1, C.MSG, C.GAP | C.ME | C.MY, limit=3)
        if j is not None:  # "ваши сообщения мне не нужны"
            return self._found(True, "no_want", j, i)
        receive = self._scan(i, 1, C.RECEIVE, objects, limit=4)
        if receive is not None or len(self.readings) <= _SHORT_TEXT:
            return self._found(False, "no_want", min(i, negation), receive or i)
        return None

    def _no_more(self, i: int, reading: Reading):
        start = None
        if reading.has(C.NOMORE):
            before = self.readings[max(0, i - 3) : i]
            if any(r.has(C.WANT | C.RECEIVE | C.SEND) for r in before) and not any(
                r.has(C.NEG) for r in before
            ):
                return None  # "recevoir plus d'offres" asks for more, not for none
            start = i
        elif reading.has(C.NEG):
            if i + 1 < len(self.readings) and self.readings[i + 1].has(C.MORE):
                start = i + 1
            else:  # "no sms", "pas de sms svp": a bare "no" + messages, and nothing else
                j = self._scan(i, 1, C.MSG, C.GAP | C.MY, limit=2)
                alone = i <= self._first_meaningful
                if j is not None and alone and self._rest_is_gaps(j):
                    return self._found(True, "no_more", i, j)
                return None
        if start is None:
            return None
        j = self._scan(start, 1, C.MSG, C.GAP | C.MY | C.MORE, limit=3)
        if j is not None:
            return self._found(True, "no_more", i, j)
        return None
