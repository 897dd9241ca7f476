"""``generate --batch``: run every pending query's fill at once over a :class:`BatchChatClient`.

:func:`run_batch_jobs` is the Batch API counterpart of the runner's online loop: the same
:class:`~negforge.generation.filling.LLMFiller` (prompts, cache, validation, re-asks) with
the batch client as its transport, each query in its own task so that a round of requests
goes out together. :func:`batch_cost` prices a run (batch answers at the batch price,
``--batch-retry online`` answers at the online price).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from negforge.errors import ConfigError
from negforge.generation.accounting import cost_usd
from negforge.generation.batch_api import BatchAPI
from negforge.generation.batch_client import CURRENT_QID, BatchChatClient, BatchReport
from negforge.generation.cache import ResponseCache
from negforge.generation.client import BackendSpec, make_client, openai_api_key
from negforge.generation.config import GenerateConfig
from negforge.generation.filling import LLMFiller, QueryJob, QueryOutcome, WordSource
from negforge.generation.journal import RunJournal
from negforge.generation.progress import RunProgress
from negforge.generation.prompts import PromptTemplate
from negforge.generation.ratelimit import RateLimiter

if TYPE_CHECKING:
    from negforge.plausibility.gate import PlausibilityGate

__all__ = ["BatchReport", "batch_cost", "check_batch_backend", "run_batch_jobs"]


def check_batch_backend(spec: BackendSpec, *, need_key: bool = True) -> None:
    """The Batch API exists only on OpenAI-compatible servers (not through litellm)."""
    if spec.transport != "openai":
        raise ConfigError(
            f"--batch needs an OpenAI-compatible backend (the OpenAI Batch API); "
            f"{spec.llm!r} goes through litellm"
        )
    if need_key:
        openai_api_key(spec)  # fail before any work when the key is missing


async def run_batch_jobs(
    jobs: list[QueryJob],
    *,
    config: GenerateConfig,
    spec: BackendSpec,
    template: PromptTemplate,
    dictionary: WordSource,
    cache: ResponseCache | None,
    record: Callable[[QueryOutcome], None],
    journal: RunJournal,
    progress: RunProgress,
    gate: PlausibilityGate | None = None,
) -> BatchReport:
    """Fill every job through the Batch API; ``record`` gets each outcome as it finishes
    (``gate``: ``--min-plausibility``, implausible levels are re-asked like invalid ones)."""
    from negforge.generation.runner import _run_jobs

    check_batch_backend(spec)
    online = make_client(spec, config) if config.batch_retry == "online" else None
    client = BatchChatClient(
        spec=spec, config=config, api=BatchAPI(spec, config), journal=journal, online=online,
        note=progress.note,
    )  # fmt: skip
    try:
        await client.recover()
        filler = LLMFiller(
            config=config, spec=spec, client=client, template=template, dictionary=dictionary,
            cache=cache, limiter=RateLimiter(),  # the API queues batches itself
            gate=gate,
        )  # fmt: skip
        client.live = len(jobs)

        async def fill(job: QueryJob) -> QueryOutcome:
            CURRENT_QID.set(job.qid)  # this task's requests carry the qid in their custom id
            try:
                return await filler.fill(job)
            finally:
                client.fill_finished()

        await _run_jobs(jobs, fill, record, max(1, len(jobs)))
    finally:
        await client.aclose()
    return client.report


def batch_cost(report: BatchReport, price_model: str | None) -> float | None:
    """What a run's answers cost: batch answers at the batch price, online ones in full."""
    batch = cost_usd(price_model, report.batch_input_tokens, report.batch_output_tokens,
                     batch=True)  # fmt: skip
    online = cost_usd(price_model, report.online_input_tokens, report.online_output_tokens)
    if batch is None or online is None:
        return None
    return batch + online


def summary_fields(report: BatchReport, price_model: str | None) -> dict[str, Any]:
    """The run summary's ``cost_usd`` and ``batch`` fields for a ``--batch`` run."""
    return {"cost_usd": batch_cost(report, price_model), "batch": report.model_dump()}
