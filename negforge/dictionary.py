"""The POS dictionary D (paper Sec. 3.2): words of the five primitive types in the training
queries, with their counts, and :class:`DictionaryIndex`, its lookup/sampling API (the LLM
stage reads it once into a read-only view, :class:`negforge.generation.sampling.FrozenDictionary`).

How words are counted:

* every token of every query is typed by the coarse ``pos_`` mapping of masking rule 3
  (:mod:`negforge.masking`: VERB -> verb, NOUN/PROPN -> noun, ADJ -> adjective,
  ADP -> preposition, ADV -> adverb);
* subjects are counted like any other token, by their own POS: the paper counts the words of
  the five types over all training queries, and the subject rule is a masking-order rule, not
  a word type. So ``person`` is a noun of D; a pronoun subject (``he``, PRON) is not in D;
* the key is the lower-cased surface form; ``lemma`` is its most frequent (lower-cased) lemma
  under that type (ties: alphabetical);
* D holds only words: letters, with an inner hyphen or apostrophe (``t-shirt``, ``o'clock``).
  Other tokens of the five types (``.the``, ``a.``, ``blanket/pillow``, ``2``, ``-``) are
  left out and counted (:attr:`DictionaryCount.dropped`, the summary and the provenance);
  query texts are normalised before parsing (:func:`negforge.nlp.normalise_text`), so a
  missing space after a full stop (``door.the``) no longer makes such tokens;
* rows are ordered by type (priority order), count (descending), then word: deterministic.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from negforge.artifacts import (
    ARROW_SCHEMAS,
    PRIMITIVE_TYPES,
    SCHEMA_VERSIONS,
    DictionaryEntry,
    PrimitiveType,
    Provenance,
    load_rows,
    sha256_file,
    write_artifact,
)
from negforge.errors import ConfigError
from negforge.masking import POS_TO_TYPE
from negforge.nlp import Token

if TYPE_CHECKING:
    from negforge.corpus import CorpusStore

SUMMARY_TOP = 15
#: A word of D: letters (any script), parts joined by one inner hyphen or apostrophe.
WORD_PATTERN = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")


def is_word(token: str) -> bool:
    """Whether a token may be a word of D (letters, inner hyphen or apostrophe)."""
    return WORD_PATTERN.fullmatch(token) is not None


@dataclass
class DictionaryCount:
    """The entries of D and the tokens of a primitive type left out as non-words."""

    entries: list[DictionaryEntry]
    dropped: Counter[str]  # lower-cased token -> occurrences

    def dropped_summary(self, top: int = SUMMARY_TOP) -> dict[str, object]:
        """What was dropped, for the provenance: occurrences, distinct tokens, the top ones."""
        return {
            "occurrences": sum(self.dropped.values()),
            "distinct": len(self.dropped),
            "top": [[token, count] for token, count in _most_common(self.dropped, top)],
        }


def _most_common(counter: Counter[str], top: int) -> list[tuple[str, int]]:
    """The most frequent items, ties alphabetical (deterministic, unlike Counter's order)."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]


def count_dictionary(parsed: Iterable[Sequence[Token]]) -> DictionaryCount:
    """Dictionary entries of a parsed corpus and the dropped non-words (see module docs)."""
    return dictionary_from_lemma_counts(lemma_counts(parsed))


def count_words(parsed: Iterable[Sequence[Token]]) -> list[DictionaryEntry]:
    """Dictionary entries of a parsed corpus (see the module docstring for the rules)."""
    return count_dictionary(parsed).entries


#: ``(type, word, lemma)`` -> occurrences: what one shard contributes to D (a sum reduces).
LemmaCounts = Counter[tuple[str, str, str]]


def lemma_counts(parsed: Iterable[Sequence[Token]]) -> LemmaCounts:
    """Partial counts of a parsed shard: ``(type, word, lemma)`` occurrences.

    Summing the counts of every shard and passing them to :func:`dictionary_from_lemma_counts`
    gives :func:`count_dictionary` of the whole corpus (the rules of the module docstring).
    """
    counts: LemmaCounts = Counter()
    pos_to_type = POS_TO_TYPE
    for tokens in parsed:
        for text, pos, _dep, lemma in tokens:
            kind = pos_to_type.get(pos)
            if kind is not None:
                word = text.lower()
                counts[(kind, word, lemma.lower() or word)] += 1
    return counts


def dictionary_from_lemma_counts(counts: LemmaCounts) -> DictionaryCount:
    """D from (summed) partial counts: its entries in order and the dropped non-words."""
    totals: Counter[tuple[str, str]] = Counter()
    lemmas: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for (kind, word, lemma), count in counts.items():
        totals[(kind, word)] += count
        lemmas[(kind, word)][lemma] += count
    rank = {t: i for i, t in enumerate(PRIMITIVE_TYPES)}
    entries: list[DictionaryEntry] = []
    dropped: Counter[str] = Counter()
    words_ok: dict[str, bool] = {}
    for (word_type, word), count in totals.items():
        ok = words_ok.get(word)
        if ok is None:
            ok = words_ok[word] = is_word(word)
        if not ok:
            dropped[word] += count
            continue
        lemma = min(lemmas[(word_type, word)].items(), key=lambda item: (-item[1], item[0]))[0]
        entries.append(
            DictionaryEntry(
                type=word_type,  # type: ignore[arg-type]
                word=word,
                lemma=lemma,
                count=count,
            )
        )
    entries.sort(key=lambda e: (rank[e.type], -e.count, e.word))
    return DictionaryCount(entries, dropped)


def entries_from_lemma_counts(counts: LemmaCounts) -> list[DictionaryEntry]:
    """Dictionary entries from (summed) partial counts, ordered as :func:`count_words`."""
    return dictionary_from_lemma_counts(counts).entries


def entries_table(entries: Sequence[DictionaryEntry]) -> pa.Table:
    """The dictionary artifact's table (built column-wise: no per-row conversion)."""
    return pa.table(
        {
            "type": [e.type for e in entries],
            "word": [e.word for e in entries],
            "lemma": [e.lemma for e in entries],
            "count": [e.count for e in entries],
        },
        schema=ARROW_SCHEMAS["dictionary"],
    )


def summary_text(
    entries: Sequence[DictionaryEntry],
    top: int = SUMMARY_TOP,
    dropped: Counter[str] | None = None,
) -> str:
    """A short human-readable summary: sizes, the most frequent words of each type, and the
    tokens left out as non-words (when ``dropped`` is given)."""
    lines = ["# POS dictionary D", ""]
    for kind in PRIMITIVE_TYPES:
        of_type = [e for e in entries if e.type == kind]
        tokens = sum(e.count for e in of_type)
        lines.append(f"{kind}: {len(of_type)} words, {tokens} occurrences")
        shown = ", ".join(
            f"{e.word} ({e.count})" if e.lemma == e.word else f"{e.word}/{e.lemma} ({e.count})"
            for e in of_type[:top]
        )
        lines.append(f"  top {min(top, len(of_type))}: {shown}")
    if dropped is not None:
        shown = ", ".join(f"{token!r} ({count})" for token, count in _most_common(dropped, top))
        lines.append("")
        lines.append(
            f"dropped (not words: letters, inner hyphen or apostrophe): "
            f"{sum(dropped.values())} occurrences of {len(dropped)} distinct tokens"
        )
        if dropped:
            lines.append(f"  top {min(top, len(dropped))}: {shown}")
    return "\n".join(lines) + "\n"


def summary_path(output: str | Path) -> Path:
    """Where the summary of a dictionary artifact goes: ``<output>.summary.txt``."""
    output = Path(output)
    return output.with_name(output.name + ".summary.txt")


@dataclass
class BuildResult:
    """What build-dict did."""

    output: Path
    summary: Path
    queries: int
    entries: int
    per_type: dict[str, int]
    bad_rows: int
    reports: list[Path]
    dropped_tokens: int = 0  # occurrences of non-word tokens left out of D
    dropped_distinct: int = 0


def build_dictionary(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    spacy_model: str | None = None,
    on_error: str = "raise",
    fmt: str | None = None,
    split: str | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    allow_empty: bool = False,
    corpora: CorpusStore | None = None,
) -> BuildResult:
    """Count the primitive words of one or more query files into a dictionary artifact.

    The artifact, its summary and the bad-row reports are written together (or not at all).
    ``corpora`` hands in files an earlier stage has already read and parsed (see
    :mod:`negforge.corpus`).
    """
    from negforge.atomic import atomic_files, check_output
    from negforge.corpus import CorpusStore
    from negforge.gc_settings import gc_paused
    from negforge.readers import ReadResult, report_path

    if not inputs:
        raise ConfigError("build-dict needs at least one input file")
    output = check_output(output, inputs=inputs)

    def report_of(index: int) -> Path:
        suffix = "" if len(inputs) == 1 else f".{index}"
        return report_path(output.with_name(output.name + suffix))

    for index in range(len(inputs)):
        check_output(report_of(index), inputs=inputs, what="bad-row report")
    check_output(summary_path(output), inputs=inputs, what="summary")
    parsed_all: list[list[Token]] = []
    queries = bad = 0
    model_name = model_version = None
    results: list[ReadResult] = []
    store = corpora if corpora is not None else CorpusStore()
    for path in inputs:
        corpus = store.corpus(path, fmt=fmt, split=split, on_error=on_error,
                              allow_empty=allow_empty, spacy_model=spacy_model,
                              cache_dir=cache_dir)  # fmt: skip
        result, parsed = corpus.read, corpus.parsed
        parsed_all.extend(parsed.tokens)
        model_name, model_version = parsed.model.name, parsed.model.version
        queries += len(result.records)
        bad += len(result.bad_rows)
        results.append(result)
    with gc_paused():
        counted = count_dictionary(parsed_all)
    entries = counted.entries
    per_type = type_sizes(entries)
    provenance = dictionary_provenance(
        inputs, counted, spacy_model=model_name, spacy_version=model_version,
        settings={"on_error": on_error, "format": fmt, "split": split},
        fingerprint=fingerprint, queries=queries, bad_rows=bad,
    )
    summary = summary_path(output)
    reports: list[Path] = []
    with atomic_files() as group:
        for index, result in enumerate(results):
            report = result.write_report(report_of(index), group)
            if report is not None:
                reports.append(report)
        write_artifact(output, entries_table(entries), provenance, group)
        group.write_text(summary, summary_text(entries, dropped=counted.dropped))
    return BuildResult(output, summary, queries, len(entries), per_type, bad, reports,
                       sum(counted.dropped.values()), len(counted.dropped))


def type_sizes(entries: Sequence[DictionaryEntry]) -> dict[str, int]:
    """Words of D per primitive type."""
    return {k: sum(1 for e in entries if e.type == k) for k in PRIMITIVE_TYPES}


def dictionary_provenance(
    inputs: Sequence[str | Path],
    counted: DictionaryCount,
    *,
    spacy_model: str | None,
    spacy_version: str | None,
    settings: dict[str, object],
    fingerprint: str | None,
    queries: int,
    bad_rows: int,
) -> Provenance:
    """The provenance of a dictionary artifact (whichever engine built it)."""
    entries = counted.entries
    return Provenance(
        kind="dictionary",
        schema_version=SCHEMA_VERSIONS["dictionary"],
        input_files=[str(p) for p in inputs],
        input_sha256=[sha256_file(p) for p in inputs],
        spacy_model=spacy_model,
        spacy_version=spacy_version,
        settings=settings,
        fingerprint=fingerprint,
        summary={"queries": queries, "entries": len(entries), "per_type": type_sizes(entries),
                 "bad_rows": bad_rows, "dropped_non_words": counted.dropped_summary()},
    )


class DictionaryIndex:
    """Lookups and sampling over D: what :func:`load_dictionary` returns.

    The LLM stage does not call it per mask: it copies the word lists and word/lemma sets
    once into :class:`negforge.generation.sampling.FrozenDictionary`.

    ``words(type)`` lists a type's words by descending count; ``contains(type, word)`` is true
    when ``word`` (any case) is a word or a lemma of that type; ``types_of(word)`` gives every
    type whose words or lemmas include it; ``sample(type, n, rng)`` draws ``n`` distinct words.
    """

    def __init__(self, entries: Iterable[DictionaryEntry]) -> None:
        self._entries: dict[str, list[DictionaryEntry]] = {k: [] for k in PRIMITIVE_TYPES}
        for entry in entries:
            self._entries[entry.type].append(entry)
        for kind in PRIMITIVE_TYPES:
            self._entries[kind].sort(key=lambda e: (-e.count, e.word))
        self._words = {k: [e.word for e in v] for k, v in self._entries.items()}
        self._counts = {k: {e.word: e.count for e in v} for k, v in self._entries.items()}
        self._forms: dict[str, set[str]] = {
            k: {e.word for e in v} | {e.lemma for e in v} for k, v in self._entries.items()
        }

    @staticmethod
    def _check(kind: str) -> str:
        if kind not in PRIMITIVE_TYPES:
            raise ConfigError(f"unknown primitive type {kind!r}; types are {PRIMITIVE_TYPES}")
        return kind

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def entries(self, kind: PrimitiveType | str) -> list[DictionaryEntry]:
        """The entries of one type, by descending count."""
        return list(self._entries[self._check(kind)])

    def words(self, kind: PrimitiveType | str) -> list[str]:
        """The words of one type, by descending count (ties: alphabetical)."""
        return list(self._words[self._check(kind)])

    def count(self, kind: PrimitiveType | str, word: str) -> int:
        """How often ``word`` occurred with this type (0 when never)."""
        return self._counts[self._check(kind)].get(word.lower(), 0)

    def contains(self, kind: PrimitiveType | str, word: str) -> bool:
        """Whether ``word`` is a word or a lemma of this type (case-insensitive)."""
        return word.strip().lower() in self._forms[self._check(kind)]

    def types_of(self, word: str) -> set[str]:
        """Every type whose words or lemmas include ``word``."""
        needle = word.strip().lower()
        return {k for k in PRIMITIVE_TYPES if needle in self._forms[k]}

    def sample(
        self,
        kind: PrimitiveType | str,
        n: int,
        rng: random.Random,
        *,
        exclude: Iterable[str] = (),
        weighted: bool = False,
    ) -> list[str]:
        """``n`` distinct words of a type (fewer if the type is smaller), drawn with ``rng``.

        Uniform by default; ``weighted=True`` draws in proportion to the counts (without
        replacement). Words in ``exclude`` (any case) are never drawn.
        """
        banned = {w.lower() for w in exclude}
        pool = [e for e in self._entries[self._check(kind)] if e.word not in banned]
        if n <= 0 or not pool:
            return []
        if not weighted:
            return [e.word for e in rng.sample(pool, min(n, len(pool)))]
        keyed = sorted(pool, key=lambda e: rng.random() ** (1.0 / e.count), reverse=True)
        return [e.word for e in keyed[:n]]


def load_dictionary(path: str | Path) -> DictionaryIndex:
    """Read a dictionary artifact into a :class:`DictionaryIndex`."""
    return DictionaryIndex(load_rows(path, DictionaryEntry))
