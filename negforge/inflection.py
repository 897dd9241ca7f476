"""Inflection classes of dictionary words, read off (word, lemma) pairs.

A fill should take the masked word's form: a masked ``opens`` wants ``closes``, not
``close``; a masked ``sitting`` wants ``standing``. D stores each surface form with its lemma
(``negforge.dictionary``), so the class of a form is read off the pair, for the masked word
and for the candidates alike:

* verb: ``base`` (word = lemma: *open*), ``ing`` (*opening*), ``s`` (*opens*; third
  person singular), ``past`` (any other form: *opened*, *took*, *taken*);
* noun: ``singular`` (word = lemma), ``plural`` (*doors*, *people*);
* adjective: ``base``, ``comparative`` (*bigger*), ``superlative`` (*biggest*);
* prepositions and adverbs do not inflect: always ``base``.

:class:`FormIndex` maps each (type, lemma) of D to its most frequent form per class, so a
candidate lemma gives the form of the masked word's class where D has that form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from negforge.artifacts import PRIMITIVE_TYPES, DictionaryEntry


def inflection_class(kind: str, word: str, lemma: str) -> str:
    """The inflection class of ``word`` (lemma ``lemma``) as a ``kind`` (module docstring)."""
    word, lemma = word.lower(), lemma.lower()
    if kind == "verb":
        if word == lemma:
            return "base"
        if word.endswith("ing"):
            return "ing"
        if word.endswith("s") and not word.endswith("ss"):
            return "s"
        return "past"
    if kind == "noun":
        return "singular" if word == lemma else "plural"
    if kind == "adjective" and word != lemma:
        if word.endswith("est"):
            return "superlative"
        if word.endswith("er"):
            return "comparative"
    return "base"


@dataclass(frozen=True)
class Form:
    """A surface form of D: the word, its lemma and how often it occurs."""

    word: str
    lemma: str
    count: int


class FormIndex:
    """For each type: lemma -> inflection class -> its most frequent form in D."""

    def __init__(self, entries: Iterable[DictionaryEntry]) -> None:
        forms: dict[str, dict[str, dict[str, Form]]] = {kind: {} for kind in PRIMITIVE_TYPES}
        for entry in entries:
            by_class = forms[entry.type].setdefault(entry.lemma, {})
            kind_class = inflection_class(entry.type, entry.word, entry.lemma)
            known = by_class.get(kind_class)
            if known is None or (entry.count, known.word) > (known.count, entry.word):
                by_class[kind_class] = Form(entry.word, entry.lemma, entry.count)
        self._forms = forms
        # lemmas of each type by descending total count, then alphabetically: stable order
        self._lemmas: dict[str, list[str]] = {}
        for kind, lemmas in forms.items():
            totals = {lemma: sum(f.count for f in by.values()) for lemma, by in lemmas.items()}
            self._lemmas[kind] = sorted(totals, key=lambda lemma: (-totals[lemma], lemma))

    def lemmas(self, kind: str) -> Sequence[str]:
        """The lemmas of a type in D, most frequent first."""
        return self._lemmas.get(kind, [])

    def form(self, kind: str, lemma: str, wanted: str) -> Form | None:
        """The form of ``lemma`` in class ``wanted``, or None when D has no such form."""
        return self._forms.get(kind, {}).get(lemma, {}).get(wanted)

    def candidates(self, kind: str, word: str, lemma: str) -> list[Form]:
        """Forms of the other lemmas of ``kind`` in the class of ``word`` (most frequent first).

        Lemmas without that form in D are left out; so are the masked word's own lemma and
        any form equal to the masked word.
        """
        wanted = inflection_class(kind, word, lemma)
        own = {word.lower(), lemma.lower()}
        found: list[Form] = []
        for other in self.lemmas(kind):
            if other in own:
                continue
            form = self.form(kind, other, wanted)
            if form is not None and form.word not in own:
                found.append(form)
        return found
