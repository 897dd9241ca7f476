"""``generate --min-plausibility X``: negatives much less plausible than their query are invalid.

A negative's plausibility is ``-Delta NLL = NLL(query) - NLL(negative)`` in nats per token
(:mod:`negforge.plausibility.scorer`): 0 when it is as plausible as its query, negative when
less. A level that passed validation but scores below ``X`` gets the reason code
``implausible`` and counts as invalid like any other: an LLM backend is asked again (the
re-ask names the problem), the rank fill draws again, the random baseline flags it; then
``--on-invalid`` decides, and the run summary counts it under its reason.

Concurrent fills await :meth:`PlausibilityGate.check`; their texts are scored together
(one scorer call per round of the event loop), through the score cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

from negforge.generation.config import GenerateConfig
from negforge.generation.validation import IMPLAUSIBLE, REASON_CODES, ValidationResult
from negforge.plausibility.cache import SentenceScore
from negforge.plausibility.scorer import SentenceScorer


class PlausibilityGate:
    """Marks valid levels below ``threshold`` (nats per token, ``-Delta NLL``) implausible."""

    def __init__(self, threshold: float, scorer: SentenceScorer) -> None:
        self.threshold = threshold
        self.scorer = scorer
        self._pending: list[tuple[list[str], asyncio.Future[list[SentenceScore]]]] = []
        self._scheduled = False
        self.checked = 0
        self.rejected = 0

    async def scores(self, texts: Sequence[str]) -> list[SentenceScore]:
        """Scores of texts, batched with those of the other coroutines waiting now."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[SentenceScore]] = loop.create_future()
        self._pending.append((list(texts), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        texts = [text for group, _ in pending for text in group]
        try:
            scored = self.scorer.score(texts)
        except Exception as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for group, future in pending:
            if not future.done():
                future.set_result(scored[start:start + len(group)])
            start += len(group)

    def plausibility(self, query: SentenceScore, negative: SentenceScore) -> float:
        """``-Delta NLL`` of a negative against its query."""
        return query.nll - negative.nll

    async def check(self, query: str, results: Sequence[ValidationResult]
                    ) -> list[ValidationResult]:  # fmt: skip
        """The results with valid but implausible levels turned invalid (``implausible``)."""
        candidates = [i for i, r in enumerate(results) if r.valid and r.negative]
        if not candidates:
            return list(results)
        texts = [query.strip(), *(str(results[i].negative).strip() for i in candidates)]
        scored = await self.scores(texts)
        checked = list(results)
        for index, score in zip(candidates, scored[1:], strict=True):
            self.checked += 1
            if self.plausibility(scored[0], score) >= self.threshold:
                continue
            self.rejected += 1
            old = results[index]
            reasons = [code for code in REASON_CODES if code in {*old.reasons, IMPLAUSIBLE}]
            checked[index] = dataclasses.replace(old, valid=False, reasons=reasons)
        return checked


@contextlib.contextmanager
def open_gate(config: GenerateConfig) -> Iterator[PlausibilityGate | None]:
    """The gate of a run (its own model and the score cache), or None when it is off."""
    if config.min_plausibility is None:
        yield None
        return
    from negforge.plausibility.cache import ScoreCache
    from negforge.plausibility.llama import LlamaSettings

    cache = None if config.no_cache else ScoreCache()
    scorer = SentenceScorer(LlamaSettings(model_path=config.local_model), cache=cache)
    try:
        yield PlausibilityGate(config.min_plausibility, scorer)
    finally:
        scorer.close()
        if cache is not None:
            cache.close()
