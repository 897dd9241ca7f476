"""Filling one query's masks: the LLM path (ask, validate, re-ask) and the random baseline.

Both produce a :class:`QueryOutcome`: the generated fields of every level's row plus what the
query cost. ``--on-invalid`` decides what an answer that stays invalid becomes:

* ``drop`` -- the row keeps no negative (``negative`` None, ``valid`` False);
* ``keep`` -- the row keeps the backend's last answer (``valid`` False, ``fallback`` keep);
* ``random`` -- the row gets a random-baseline fill (``fallback`` random; ``valid`` judges it).

``invalid_reasons`` always lists why the backend's answer was rejected (empty when it passed).

A query whose calls failed after every retry (``backend_error``) is not an invalid answer:
``--on-failed`` decides its rows. ``random`` gives a random-baseline fill flagged with
``fallback`` ``random_after_error`` and the backend/model ``random`` (what made it); ``drop``
and ``error`` leave the rows without a negative. Such queries are never journaled, so a
rerun asks again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from negforge.artifacts import GENERATED_LEVELS, GeneratedLevel, MaskedLevel
from negforge.generation.answers import parse_answer
from negforge.generation.cache import CachedAnswer, ResponseCache, cache_key
from negforge.generation.client import (
    BackendSpec,
    ChatClient,
    Completion,
    SamplingParams,
    response_format_for,
)
from negforge.generation.config import GenerateConfig
from negforge.generation.errors import RetryableCallError, scrub_secrets
from negforge.generation.prompts import (
    SINGLE_WORD_PATTERN,
    Message,
    PromptTemplate,
    level_key,
    response_schema,
)
from negforge.generation.ratelimit import RateLimiter
from negforge.generation.retry import call_with_retries
from negforge.generation.sampling import (
    WordList,
    query_rng,
    random_level_fills,
    random_query_fills,
    sample_dictionary,
)
from negforge.generation.validation import (
    ValidationResult,
    WordDictionary,
    validate_query,
)

if TYPE_CHECKING:
    from negforge.plausibility.gate import PlausibilityGate

#: Row reason when a query's backend calls failed after every retry (not a validation code).
BACKEND_ERROR = "backend_error"
#: ``fallback`` of a row filled by the random baseline because its backend calls failed.
FAILED_FALLBACK = "random_after_error"

#: What each reason code tells the model in a re-ask.
REASK_TEXT: dict[str, str] = {
    "wrong_fill_count": "give exactly one replacement per <mask>",
    "empty_fill": "a replacement was empty",
    "phrase_fill": "a replacement had several words; use one word per <mask>",
    "unmasked_changed": "keep every unmasked word exactly as it is",
    "copied_original": "a replacement repeated the hidden original word",
    "equals_positive": "the sentence equals the original query",
    "duplicate_level": "this level repeats another level",
    "not_in_dictionary": "use words from the dictionary lists",
    "wrong_type": "use a word of the type given for that <mask>",
    "implausible": "the sentence is far less natural than the original; choose words that "
    "make a fluent, believable sentence",
}


class WordSource(WordList, WordDictionary, Protocol):
    """The dictionary interface filling needs (``negforge.dictionary.DictionaryIndex``)."""


@dataclass
class QueryJob:
    """One query: its masked levels (ascending) and their artifact rows."""

    qid: str
    levels: list[MaskedLevel]
    row_indices: list[int] = field(default_factory=list)  # the levels' rows in the artifact


@dataclass
class QueryOutcome:
    """The generated part of a query's rows and what it cost."""

    qid: str
    rows: list[GeneratedLevel]  # one per level
    requests: int = 0  # requests made (network or cache)
    calls: int = 0  # requests that went to the backend
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failed: bool = False  # the first call failed after all retries
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def journal_entry(self) -> dict[str, Any]:
        """What the journal keeps of a finished query."""
        return {
            "qid": self.qid,
            "rows": GENERATED_LEVELS.dump_python(self.rows),
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "reasks": self.reasks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class RowMeta:
    """The row fields fixed for a whole run."""

    backend: str
    model: str
    prompt_version: str | None


#: Who made a random-baseline row (and a FAILED_FALLBACK row).
RANDOM_META = RowMeta(backend="random", model="random", prompt_version=None)


def _split(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` rows (remainder on the first), so rows sum to it."""
    base, rest = divmod(total, parts)
    return [base + (rest if index == 0 else 0) for index in range(parts)]


def finish_rows(
    job: QueryJob,
    results: Sequence[ValidationResult],
    *,
    config: GenerateConfig,
    dictionary: WordSource,
    meta: RowMeta,
    requests: int,
    cache_hit: bool,
    input_tokens: int,
    output_tokens: int,
    extra_reasons: Sequence[str] = (),
    failed: bool = False,
) -> list[GeneratedLevel]:
    """Rows for a query's final results, applying ``--on-invalid`` to invalid levels (and
    ``--on-failed`` to every level of a query whose backend calls failed)."""
    mode: str = config.on_invalid
    if failed:
        mode = "random" if config.on_failed == "random" else "drop"
        meta = RANDOM_META if mode == "random" else meta
    rows: list[GeneratedLevel] = []
    in_split = _split(input_tokens, len(job.levels))
    out_split = _split(output_tokens, len(job.levels))
    taken = {job.levels[0].query.lower()}
    taken.update(r.negative.lower() for r in results if r.valid and r.negative is not None)
    fallback_rng = None
    for index, (level, result) in enumerate(zip(job.levels, results, strict=True)):
        reasons = list(dict.fromkeys([*extra_reasons, *result.reasons]))
        negative, fills, valid, fallback = result.negative, result.fills, result.valid, None
        if not valid:
            if mode == "drop":
                negative = None
            elif mode == "keep":
                fallback = "keep"
            else:
                if fallback_rng is None:
                    fallback_rng = query_rng(config.seed, job.qid, "fallback")
                fills = random_level_fills(level, dictionary, fallback_rng, taken)
                check = validate_fills([level], [fills], config, dictionary)[0]
                negative = check.negative
                valid = check.valid and (negative or "").lower() not in taken
                fallback = FAILED_FALLBACK if failed else "random"
                if negative is not None:
                    taken.add(negative.lower())
        rows.append(
            GeneratedLevel(
                level=level.level,
                negative=negative,
                fills=list(fills),
                valid=bool(valid),
                invalid_reasons=reasons,
                attempts=requests,
                fallback=fallback,
                cache_hit=cache_hit,
                backend=meta.backend,
                model=meta.model,
                prompt_version=meta.prompt_version,
                input_tokens=in_split[index],
                output_tokens=out_split[index],
            )
        )
    return rows


def validate_fills(
    levels: Sequence[MaskedLevel],
    fills: Sequence[Sequence[str]],
    config: GenerateConfig,
    dictionary: WordDictionary | None,
) -> list[ValidationResult]:
    """:func:`validate_query` of one query's fills under the run's settings."""
    return validate_query(
        levels,
        fills,
        allow_phrases=config.allow_phrases,
        dictionary=dictionary,
        require_dict_words=config.require_dict_words,
    )


async def validate_and_gate(
    job: QueryJob,
    fills: Sequence[Sequence[str]],
    config: GenerateConfig,
    dictionary: WordDictionary | None,
    gate: PlausibilityGate | None,
) -> list[ValidationResult]:
    """The fills validated, then (``--min-plausibility``) implausible levels flagged."""
    results = validate_fills(job.levels, fills, config, dictionary)
    if gate is not None:
        results = await gate.check(job.levels[0].query, results)
    return results


class RandomFiller:
    """The paper's random-sample baseline: dictionary words of the masked word's type."""

    def __init__(self, config: GenerateConfig, dictionary: WordSource,
                 gate: PlausibilityGate | None = None) -> None:  # fmt: skip
        self.config = config
        self.dictionary = dictionary
        self.gate = gate  # --min-plausibility: implausible levels are flagged
        self.meta = RANDOM_META

    async def fill(self, job: QueryJob) -> QueryOutcome:
        started = time.perf_counter()
        fills = random_query_fills(job.levels, self.dictionary, self.config.seed)
        results = await validate_and_gate(job, fills, self.config, self.dictionary, self.gate)
        rows = finish_rows(
            job,
            results,
            config=self.config,
            dictionary=self.dictionary,
            meta=self.meta,
            requests=0,
            cache_hit=False,
            input_tokens=0,
            output_tokens=0,
        )
        return QueryOutcome(qid=job.qid, rows=rows, seconds=time.perf_counter() - started)


def _problems(results: Sequence[ValidationResult], levels: Sequence[MaskedLevel],
              parse_problem: str | None) -> list[str]:
    problems = [parse_problem] if parse_problem else []
    for level, result in zip(levels, results, strict=True):
        if result.valid:
            continue
        hints = "; ".join(REASK_TEXT.get(code, code) for code in result.reasons)
        problems.append(f"{level_key(level.level)}: {hints}")
    return problems


class LLMFiller:
    """Ask a chat backend for every level of a query at once; re-ask while invalid."""

    def __init__(
        self,
        *,
        config: GenerateConfig,
        spec: BackendSpec,
        client: ChatClient,
        template: PromptTemplate,
        dictionary: WordSource,
        cache: ResponseCache | None,
        limiter: RateLimiter,
        gate: PlausibilityGate | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.gate = gate  # --min-plausibility: implausible levels are asked again
        self.stopping = stopping or (lambda: False)
        self.spec = spec
        self.client = client
        self.template = template
        self.dictionary = dictionary
        self.cache = cache
        self.limiter = limiter
        self.params = SamplingParams(
            temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed
        )
        self.meta = RowMeta(
            backend=spec.provider, model=spec.model, prompt_version=template.label
        )

    def request_for(self, job: QueryJob) -> tuple[list[Message], dict[str, Any] | None]:
        """The first request of a query: messages and response format (deterministic)."""
        subset = sample_dictionary(
            self.dictionary, job.levels, self.config.dict_sample, self.config.seed
        )
        grammar = self.spec.wire_format == "json_object_schema"  # llama.cpp turns it into one
        constrained = grammar and self.config.fills_constrained
        pattern = SINGLE_WORD_PATTERN if grammar and not self.config.allow_phrases else None
        schema = response_schema(
            job.levels, subset if constrained else None, word_pattern=pattern
        )
        response_format = response_format_for(self.spec.wire_format, schema)
        return self.template.render(job.levels, subset), response_format

    def render(self, job: QueryJob) -> list[Message]:
        """The first request's messages for a query."""
        return self.request_for(job)[0]

    def request_key(self, messages: Sequence[Message], response_format: Any) -> str:
        """The cache key of one request."""
        return cache_key(
            backend=self.spec.provider,
            model=self.spec.model,
            template=self.template.label,
            messages=messages,
            params={**self.params.as_dict(), "response_format": response_format},
        )

    async def _request(
        self, messages: list[Message], response_format: Any, outcome: QueryOutcome
    ) -> Completion:
        outcome.requests += 1
        key = None
        if self.cache is not None:
            key = self.request_key(messages, response_format)
            hit = self.cache.get(key)
            if hit is not None:
                outcome.cache_hits += 1
                return Completion(scrub_secrets(hit.text), hit.input_tokens, hit.output_tokens)
        estimate = 0
        if self.limiter.active:
            estimate = sum(len(m["content"]) for m in messages) // 4
            estimate += self.params.max_tokens or 256
            await self.limiter.acquire(estimate)

        def count_retry(_: RetryableCallError, __: float) -> None:
            outcome.retries += 1

        outcome.calls += 1
        completion = await call_with_retries(
            lambda: self.client.complete(messages, response_format, self.params),
            max_retries=self.config.max_retries,
            max_backoff_s=self.config.max_backoff_s,
            on_retry=count_retry,
            stopping=self.stopping,
        )
        # A server may echo the key (or an encoding of it): nothing with it is kept anywhere.
        completion = Completion(
            scrub_secrets(completion.text), completion.input_tokens, completion.output_tokens
        )
        if self.limiter.active:
            self.limiter.settle(estimate, completion.input_tokens + completion.output_tokens)
        outcome.input_tokens += completion.input_tokens
        outcome.output_tokens += completion.output_tokens
        if self.cache is not None and key is not None:
            self.cache.set(
                key,
                CachedAnswer(
                    text=completion.text,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                ),
            )
        return completion

    def _validate(self, job: QueryJob, fills: Sequence[Sequence[str]]) -> list[ValidationResult]:
        return validate_fills(job.levels, fills, self.config, self.dictionary)

    async def fill(self, job: QueryJob) -> QueryOutcome:
        started = time.perf_counter()
        outcome = QueryOutcome(qid=job.qid, rows=[])
        messages, response_format = self.request_for(job)
        chosen_valid = [False] * len(job.levels)
        results: list[ValidationResult] | None = None
        extra_reasons: list[str] = []
        for attempt in range(self.config.max_attempts):
            try:
                completion = await self._request(messages, response_format, outcome)
            except RetryableCallError as exc:
                if attempt == 0:
                    outcome.failed, outcome.error = True, str(exc)
                    extra_reasons = [BACKEND_ERROR]
                break  # a failed re-ask: keep the best answer so far
            if attempt:
                outcome.reasks += 1
            parsed = parse_answer(completion.text, job.levels)
            if results is None or not any(chosen_valid):
                results = self._validate(job, parsed.fills)
            else:  # a re-ask: keep the levels that were already valid, revalidate the mix
                fresh = self._validate(job, parsed.fills)
                chosen = [
                    old.fills if old.valid else new.fills
                    for old, new in zip(results, fresh, strict=True)
                ]
                results = self._validate(job, chosen)
            if self.gate is not None:
                results = await self.gate.check(job.levels[0].query, results)
            chosen_valid = [result.valid for result in results]
            if all(chosen_valid):
                break
            if attempt + 1 < self.config.max_attempts:
                if self.cache is not None:
                    self.cache.flush()  # the answer to re-ask about must survive a kill
                problems = _problems(results, job.levels, parsed.problem)
                messages = [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    self.template.reask(messages, job.levels, problems),
                ]
        if results is None:
            results = [
                ValidationResult(valid=False, reasons=[], fills=[], negative=None)
                for _ in job.levels
            ]
        outcome.rows = finish_rows(
            job,
            results,
            config=self.config,
            dictionary=self.dictionary,
            meta=self.meta,
            requests=outcome.requests,
            cache_hit=outcome.requests > 0 and outcome.cache_hits == outcome.requests,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            extra_reasons=extra_reasons,
            failed=outcome.failed,
        )
        outcome.seconds = time.perf_counter() - started
        return outcome

