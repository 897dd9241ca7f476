"""``generate --llm local`` (``--local-fill rank``, the default): D's words ranked by the model.

A small model writes poor free text, but it still knows which of a few words makes a
likelier sentence. For each level, the masks are filled left to right; for mask i:

1. **candidates** -- every other lemma of D with the mask's type, in the masked word's
   inflection class where D has that form (``opens`` -> ``closes``, ``sitting`` ->
   ``standing``; :mod:`negforge.inflection`), never the masked word or its lemma, and only
   content words (:func:`content_entries`: no auxiliary, pronoun-like noun, determiner-like
   adjective, one-letter token or tagging slip, which the model would otherwise prefer:
   "person closes the refrigerator." -> "person is the one.");
2. **prefilter** -- the log-probability of each candidate's first token after the sentence
   so far (one logits row the previous step already computed); the best
   ``rank_candidates`` go on (a word already in the sentence, unmasked or filled, is left
   out: no "the door door", no "person holds a person");
3. **score** -- each of those is decoded after the shared prefix (one copy in the KV cache,
   tagged with every candidate's sequence id), followed by the unmasked words up to the next
   mask or the end of the sentence; its score is the log-likelihood of that continuation,
   i.e. of the sentence so far;
4. **choose** -- among the ``rank_top_k`` best, one is drawn with probability proportional
   to ``exp(score / temperature)`` from a generator seeded by (seed, qid, level, attempt);
   the chosen continuation becomes the next prefix.

The levels of a query and the queries in flight (``--concurrency``) run as coroutines whose
decode groups share llama.cpp batches (:class:`~negforge.plausibility.batching.DecodeBatcher`);
what a query gets does not depend on its neighbours. An invalid level (the validator's
reasons, or ``--min-plausibility``) is drawn again with the next attempt's generator, up to
``--max-attempts``; then ``--on-invalid`` applies as for every backend.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.artifacts import DictionaryEntry, MaskedLevel
from negforge.generation.client import BackendSpec
from negforge.generation.config import GenerateConfig
from negforge.generation.filling import (
    QueryJob,
    QueryOutcome,
    RowMeta,
    WordSource,
    finish_rows,
    validate_and_gate,
)
from negforge.generation.local_server import find_gguf
from negforge.generation.sampling import match_case, query_rng, random_level_fills
from negforge.generation.validation import ValidationResult
from negforge.inflection import Form, FormIndex
from negforge.plausibility.batching import DecodeBatcher
from negforge.plausibility.llama import DecodeRequest, log_softmax_at, log_softmax_row
from negforge.template import separator

if TYPE_CHECKING:
    import numpy as np

    from negforge.plausibility.gate import PlausibilityGate

#: The fill method's label in the rows' ``prompt_version`` and the run key (bump when the
#: method changes). v2: candidates are content words only (:func:`content_entries`).
RANK_VERSION = "rank@v2"
#: Closed-class lemmas the tagger sometimes gives one of the five types; a language model
#: ranks them high in almost any slot (they are frequent everywhere), so the rank fill never
#: proposes them. Verbs: the auxiliaries and modals of Universal Dependencies' English AUX
#: (a copular ``is`` tagged VERB became 28 % of the verb fills). Nouns: pronoun-like
#: (``one``, ``something``). Adjectives: determiner-like quantifiers (``other``, ``few``).
#: Adverbs: the pro-forms ``there`` / ``here``. Prepositions are a closed class already.
FUNCTION_LEMMAS: dict[str, frozenset[str]] = {
    "verb": frozenset({"be", "have", "do", "will", "would", "shall", "should", "can",
                       "could", "may", "might", "must", "ought"}),
    "noun": frozenset({"one", "self", "other", "lot", "someone", "somebody", "something",
                       "anyone", "anybody", "anything", "everyone", "everybody", "everything",
                       "nobody", "nothing", "none"}),
    "adjective": frozenset({"other", "another", "such", "own", "same", "few", "several",
                            "many", "much", "more", "most", "less", "least"}),
    "adverb": frozenset({"there", "here"}),
    "preposition": frozenset(),
}
#: A word that D holds at least this many times more often under another type is a tagging
#: slip under this one (verb ``person``, adverb ``pillow``, noun ``eating``): not a candidate.
OTHER_READING_RATIO = 5
#: Sequences per decode (candidates of several queries' steps share one batch).
RANK_SEQUENCES = 128


@dataclass(frozen=True)
class LevelText:
    """A level cut at its masks: ``prefix``, then per mask its separator and the text after."""

    prefix: str
    separators: list[str]  # "" before a fill at the start of the sentence, else " "
    segments: list[str]  # the unmasked text after mask i, up to the next mask or the end


def level_text(level: MaskedLevel) -> LevelText:
    """A level as text pieces; prefix + (separator + fill + segment)* renders the negative."""
    tokens, masks = level.tokens, list(level.masked_positions)
    bounds = [*masks, len(tokens)]

    def span(begin: int, end: int) -> str:
        return "".join(separator(k, tokens[k]) + tokens[k] for k in range(begin, end))

    return LevelText(
        prefix=span(0, masks[0]),
        separators=["" if position == 0 else " " for position in masks],
        segments=[span(position + 1, bounds[i + 1]) for i, position in enumerate(masks)],
    )


def sample_top_k(scores: Sequence[float], top_k: int, temperature: float,
                 rng: random.Random) -> int:  # fmt: skip
    """An index among the ``top_k`` best scores, drawn with weights ``exp(score / T)``."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: max(1, top_k)]
    if temperature <= 0 or len(order) == 1:
        return order[0]
    best = scores[order[0]]
    weights = [math.exp((scores[i] - best) / temperature) for i in order]
    draw = rng.random() * sum(weights)
    for index, weight in zip(order, weights, strict=True):
        draw -= weight
        if draw < 0:
            return index
    return order[-1]


@dataclass
class _Usage:
    """Model work spent on one query."""

    steps: int = 0  # decode groups
    tokens: int = 0  # tokens decoded (padding not counted)


@dataclass
class _Candidates:
    """The candidate forms of one mask, cased and tokenized after their separator."""

    words: list[str]
    tokens: list[list[int]]
    forms: list[Form] = field(default_factory=list)


class RankFiller:
    """Fill every level by ranking dictionary words with a local model (module docstring)."""

    def __init__(
        self,
        config: GenerateConfig,
        dictionary: WordSource,
        forms: FormIndex,
        batcher: DecodeBatcher,
        gate: PlausibilityGate | None = None,
    ) -> None:
        self.config = config
        self.dictionary = dictionary
        self.forms = forms
        self.batcher = batcher
        self.model = batcher.model
        self.gate = gate
        self.meta = RowMeta(backend="local", model=self.model.path.name,
                            prompt_version=RANK_VERSION)  # fmt: skip
        self._tokens: dict[str, list[int]] = {}
        self._candidates: dict[tuple[str, str, str, str], _Candidates] = {}

    def tokens(self, text: str) -> list[int]:
        """Token ids of a text piece (memoised)."""
        found = self._tokens.get(text)
        if found is None:
            found = self._tokens[text] = self.model.tokenize(text) if text else []
        return found

    def candidates(self, kind: str, word: str, lemma: str, separator: str) -> _Candidates:
        """The candidates of a mask (memoised per masked word, type and separator)."""
        key = (kind, word, lemma, separator)
        found = self._candidates.get(key)
        if found is not None:
            return found
        forms = self.forms.candidates(kind, word, lemma)
        if not forms:  # D has no other lemma in this form: any form of another lemma
            own = {word.lower(), lemma.lower()}
            forms = [
                form
                for other in self.forms.lemmas(kind)
                if other not in own
                for form in [self._any_form(kind, other)]
                if form is not None and form.word not in own
            ]
        words = [match_case(form.word, word) for form in forms]
        tokens = [self.tokens(separator + text) for text in words]
        kept = [i for i, ids in enumerate(tokens) if ids]
        found = _Candidates(
            words=[words[i] for i in kept],
            tokens=[tokens[i] for i in kept],
            forms=[forms[i] for i in kept],
        )
        self._candidates[key] = found
        return found

    def _any_form(self, kind: str, lemma: str) -> Form | None:
        for wanted in ("base", "singular", "s", "ing", "past", "plural"):
            form = self.forms.form(kind, lemma, wanted)
            if form is not None:
                return form
        return None

    async def fill_level(self, qid: str, level: MaskedLevel, attempt: int,
                         usage: _Usage) -> list[str]:  # fmt: skip
        """One level's fills (see the module docstring)."""
        rng = query_rng(self.config.seed, qid, f"rank:{level.level}:{attempt}")
        pieces = level_text(level)
        prefix = [self.model.start_token, *self.tokens(pieces.prefix)]
        rows = await self.batcher.run(
            [DecodeRequest((0,), prefix, 0, [False] * (len(prefix) - 1) + [True])], 1
        )
        usage.steps += 1
        usage.tokens += len(prefix)
        row = log_softmax_row(rows[0])
        fills: list[str] = []
        masked = set(level.masked_positions)
        used = {token.lower() for i, token in enumerate(level.tokens) if i not in masked}
        masks = len(level.masked_positions)
        for index, (kind, word, lemma) in enumerate(
            zip(level.types, level.original_words, level.original_lemmas, strict=True)
        ):
            found = self.candidates(kind, word, lemma, pieces.separators[index])
            allowed = [i for i, text in enumerate(found.words) if text.lower() not in used]
            if not allowed:  # nothing left of this type in D: the random baseline's draw
                draw = random_level_fills(level, self.dictionary, rng)[index]
                found = _Candidates([draw], [self.tokens(pieces.separators[index] + draw)])
                allowed = [0]
            firsts = {i: float(row[found.tokens[i][0]]) for i in allowed}
            segment = self.tokens(pieces.segments[index])
            last_mask = index + 1 == masks
            chosen, scores, tails = await self._score(prefix, found, firsts, segment, last_mask,
                                                      usage)  # fmt: skip
            pick = sample_top_k(scores, self.config.rank_top_k, self.config.temperature, rng)
            candidate = chosen[pick]
            fills.append(found.words[candidate])
            used.add(found.words[candidate].lower())
            prefix = [*prefix, *found.tokens[candidate], *segment]
            if not last_mask:
                row = tails[pick]
        return fills

    async def _score(
        self,
        prefix: list[int],
        found: _Candidates,
        firsts: dict[int, float],
        segment: list[int],
        last_mask: bool,
        usage: _Usage,
    ) -> tuple[list[int], list[float], list[np.ndarray]]:
        """Decode the best prefiltered candidates after the prefix; their scores.

        Returns the candidates' indices, their log-likelihoods (first token included) and,
        unless this is the last mask, each one's log-softmax after its continuation.
        """
        import numpy as np

        order = sorted(firsts, key=lambda i: (-firsts[i], i))
        chosen = order[: self.config.rank_candidates]
        while len(chosen) > 1 and not self.batcher.fits(
            len(prefix) + sum(len(found.tokens[i]) + len(segment) for i in chosen), len(chosen)
        ):
            chosen = chosen[:-1]
        requests = [DecodeRequest(tuple(range(len(chosen))), prefix, 0, [False] * len(prefix))]
        continuations = [[*found.tokens[i], *segment] for i in chosen]
        for local, tokens in enumerate(continuations):
            outputs = [True] * len(tokens)
            if last_mask:
                outputs[-1] = False  # no next mask: the last row is not needed
            requests.append(DecodeRequest((local,), tokens, len(prefix), outputs))
        rows = await self.batcher.run(requests, len(chosen))
        usage.steps += 1
        usage.tokens += len(prefix) + sum(len(tokens) for tokens in continuations)
        targets: list[int] = []
        picks: list[int] = []  # row index of each scored target
        tails: list[np.ndarray] = []
        offset = 0
        for tokens in continuations:
            count = len(tokens) - (1 if last_mask else 0)
            targets.extend(tokens[1:])
            picks.extend(range(offset, offset + len(tokens) - 1))
            if not last_mask:
                tails.append(rows[offset + len(tokens) - 1])
            offset += count
        logprobs = log_softmax_at(rows[picks], targets) if picks else np.zeros(0)
        scores: list[float] = []
        start = 0
        for candidate, tokens in zip(chosen, continuations, strict=True):
            part = logprobs[start:start + len(tokens) - 1]
            start += len(tokens) - 1
            scores.append(firsts[candidate] + float(part.sum()))
        return chosen, scores, [log_softmax_row(tail) for tail in tails]

    async def fill(self, job: QueryJob) -> QueryOutcome:
        """Every level of a query, re-drawn while invalid; its rows and model work."""
        started = time.perf_counter()
        usage = _Usage()
        fills = list(await asyncio.gather(
            *(self.fill_level(job.qid, level, 0, usage) for level in job.levels)
        ))  # fmt: skip
        results = await self._check(job, fills)
        attempts = 1
        for attempt in range(1, self.config.max_attempts):
            redo = [i for i, result in enumerate(results) if not result.valid]
            if not redo:
                break
            attempts += 1
            fresh = await asyncio.gather(
                *(self.fill_level(job.qid, job.levels[i], attempt, usage) for i in redo)
            )
            for i, level_fills in zip(redo, fresh, strict=True):
                fills[i] = level_fills
            results = await self._check(job, fills)
        rows = finish_rows(
            job,
            results,
            config=self.config,
            dictionary=self.dictionary,
            meta=self.meta,
            requests=attempts,
            cache_hit=False,
            input_tokens=usage.tokens,
            output_tokens=0,
        )
        return QueryOutcome(
            qid=job.qid,
            rows=rows,
            requests=attempts,
            calls=usage.steps,
            reasks=attempts - 1,
            input_tokens=usage.tokens,
            seconds=time.perf_counter() - started,
        )

    async def _check(self, job: QueryJob, fills: Sequence[Sequence[str]]
                     ) -> list[ValidationResult]:  # fmt: skip
        return await validate_and_gate(job, fills, self.config, self.dictionary, self.gate)


def rank_backend_spec(config: GenerateConfig) -> BackendSpec:
    """The backend identity of a rank-fill run: provider ``local``, model the GGUF's name."""
    gguf = find_gguf(config.local_model)
    return BackendSpec(
        llm=config.llm, provider="local", model=gguf.name, wire_model=gguf.name, api_base=None,
        transport="openai", wire_format="none",
    )  # fmt: skip


def content_entries(entries: Iterable[DictionaryEntry]) -> list[DictionaryEntry]:
    """The entries of D the rank fill may propose: content words of their type.

    Left out: :data:`FUNCTION_LEMMAS` (by lemma or word), one-letter tokens (``x``, ``s``:
    tokenizer debris), and a word's reading under a type when D holds it at least
    :data:`OTHER_READING_RATIO` times as often under another type. D itself keeps them all
    (the paper's D; the random baseline draws from it unchanged).
    """
    listed = list(entries)
    readings: dict[str, dict[str, int]] = {}
    for entry in listed:
        by_type = readings.setdefault(entry.word, {})
        by_type[entry.type] = by_type.get(entry.type, 0) + entry.count
    kept: list[DictionaryEntry] = []
    for entry in listed:
        closed = FUNCTION_LEMMAS.get(entry.type, frozenset())
        if entry.lemma in closed or entry.word in closed or len(entry.word) < 2:
            continue
        other = max((count for kind, count in readings[entry.word].items()
                     if kind != entry.type), default=0)  # fmt: skip
        if other >= OTHER_READING_RATIO * entry.count:
            continue
        kept.append(entry)
    return kept


def form_index(dictionary_path: Path) -> FormIndex:
    """The inflection index of the rank fill's candidates: :func:`content_entries` of D."""
    from negforge.artifacts import PRIMITIVE_TYPES
    from negforge.dictionary import load_dictionary

    index = load_dictionary(dictionary_path)
    return FormIndex(content_entries(
        entry for kind in PRIMITIVE_TYPES for entry in index.entries(kind)
    ))  # fmt: skip


async def run_rank_fill(
    jobs: Sequence[QueryJob],
    config: GenerateConfig,
    dictionary: WordSource,
    dictionary_path: Path,
    gate: PlausibilityGate | None,
    run_jobs: Callable[[Callable[[QueryJob], Coroutine[Any, Any, QueryOutcome]]],
                       Awaitable[None]],
) -> None:
    """Load the model, then run ``run_jobs`` with the rank filler's ``fill``."""
    from negforge.plausibility.llama import LlamaLM, LlamaSettings

    del jobs  # run_jobs runs them; the argument documents what the model is loaded for
    settings = LlamaSettings(model_path=config.local_model, n_batch=512, n_ctx=512,
                             n_seq_max=RANK_SEQUENCES)  # fmt: skip
    with LlamaLM(settings) as model:
        filler = RankFiller(config, dictionary, form_index(dictionary_path),
                            DecodeBatcher(model), gate)  # fmt: skip
        await run_jobs(filler.fill)
