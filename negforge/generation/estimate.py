"""``negforge generate --dry-run``: the calls, tokens and cost a run would take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from negforge.generation.accounting import (
    GenerationEstimate,
    cost_usd,
    count_tokens,
    price_model,
)
from negforge.generation.cache import ResponseCache
from negforge.generation.client import BackendSpec, resolve_backend
from negforge.generation.config import GenerateConfig
from negforge.generation.filling import LLMFiller, QueryJob
from negforge.generation.masked_input import load_word_source, read_masked
from negforge.generation.prompts import level_key, load_template
from negforge.generation.ratelimit import RateLimiter


def _answer_example(job: QueryJob) -> str:
    """An answer of the expected size (the original words as fills), to estimate output."""
    return json.dumps({level_key(level.level): level.original_words for level in job.levels})


def estimate_generation(
    masked_path: Path, dictionary_path: Path, config: GenerateConfig
) -> GenerationEstimate:
    """``--dry-run``: the calls, input/output tokens and cost a run would take; spends nothing.

    Input tokens are counted exactly on the rendered first requests; output tokens on an
    answer of the expected size. Re-asks are not predicted (the summary reports them).
    """
    jobs = read_masked(Path(masked_path)).jobs
    if config.limit is not None:
        jobs = jobs[: config.limit]
    rows = jobs.rows
    if config.is_random or config.rank_fill:
        name = "random"
        if config.rank_fill:
            from negforge.generation.rank_fill import rank_backend_spec

            name = rank_backend_spec(config).model
        return GenerationEstimate(
            backend="random" if config.is_random else "local", model=name, queries=len(jobs),
            rows=rows, calls=0, input_tokens=0, output_tokens=0, cost_usd=0.0,
        )  # fmt: skip
    dictionary = load_word_source(Path(dictionary_path))
    template = load_template(config.prompt_template, config.prompt_version)
    spec = resolve_backend(config)
    if config.batch:
        from negforge.generation.batch_runner import check_batch_backend

        check_batch_backend(spec, need_key=False)  # a dry run sends nothing
    filler = LLMFiller(
        config=config,
        spec=spec,
        client=_NoClient(),
        template=template,
        dictionary=dictionary,
        cache=None,
        limiter=RateLimiter(),
    )
    cache = None if config.no_cache else _existing_cache(config)
    input_tokens = output_tokens = cached = 0
    batch_lines = []
    try:
        for job in jobs:
            messages, response_format = filler.request_for(job)
            if config.batch:
                batch_lines.append(_batch_line_of(job, spec, filler, messages, response_format))
            input_tokens += count_tokens(spec.model, messages=messages)
            output_tokens += count_tokens(spec.model, text=_answer_example(job))
            if cache is not None and cache.get(
                filler.request_key(messages, response_format)
            ) is not None:
                cached += 1
    finally:
        if cache is not None:
            cache.close()
    online_cost = cost_usd(price_model(spec), input_tokens, output_tokens)
    batch_files = 0
    if config.batch:
        from negforge.generation.batch_files import split_lines

        batch_files = len(split_lines(batch_lines, config.batch_max_requests,
                                      config.batch_max_bytes))  # fmt: skip
    return GenerationEstimate(
        backend=spec.provider,
        model=spec.model,
        queries=len(jobs),
        rows=rows,
        calls=len(jobs),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(price_model(spec), input_tokens, output_tokens, batch=config.batch),
        cached_calls=cached,
        batch=config.batch,
        online_cost_usd=online_cost if config.batch else None,
        batch_files=batch_files,
    )


def _batch_line_of(job: QueryJob, spec: BackendSpec, filler: LLMFiller, messages: Any,
                   response_format: Any) -> Any:  # fmt: skip
    """The Batch API input line of a query's first request (to count batch files)."""
    from negforge.generation.batch_files import batch_line, custom_id_for
    from negforge.generation.client import chat_request_body

    body = chat_request_body(spec.wire_model, messages, response_format, filler.params)
    return batch_line(custom_id_for(job.qid, 1), body)


def _existing_cache(config: GenerateConfig) -> ResponseCache | None:
    directory = config.resolved_cache_dir()
    return ResponseCache(directory) if directory.exists() else None


class _NoClient:
    """A client for rendering only (``--dry-run`` never calls)."""

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("dry run: no backend call is made")

    async def aclose(self) -> None:
        return None
