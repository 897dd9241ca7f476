"""``generate``: fill a masked artifact's levels with hard negatives, resumably and concurrently.

:func:`generate_negatives` reads the masked artifact and the dictionary, skips the queries an
earlier run of the same settings already finished (its journal, or its finished artifact),
fills the rest with ``--concurrency`` asyncio workers, journals each finished query at once,
and finally writes the negatives artifact atomically with the run summary in its provenance.
The masked input is read by :mod:`negforge.generation.masked_input`; ``--dry-run`` is
:func:`negforge.generation.estimate.estimate_generation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from negforge.artifacts import (
    GENERATED_LEVELS,
    SCHEMA_VERSIONS,
    GeneratedLevel,
    Provenance,
    artifact_sha256,
    read_artifact,
    read_provenance,
    sha256_file,
    write_artifact,
)
from negforge.errors import ConfigError, InputError, NegforgeError
from negforge.gc_settings import gc_paused, inputs_frozen
from negforge.generation.accounting import (
    GenerationSummary,
    RunTally,
    price_model,
    summarise_run,
)
from negforge.generation.cache import BatchedWriteCache, ResponseCache
from negforge.generation.client import BackendSpec, make_client, resolve_backend
from negforge.generation.config import GenerateConfig
from negforge.generation.errors import FatalCallError, GenerationFailed, redact_url
from negforge.generation.filling import (
    BACKEND_ERROR,
    LLMFiller,
    QueryJob,
    QueryOutcome,
    RandomFiller,
    WordSource,
)
from negforge.generation.journal import RunJournal, journal_path_for
from negforge.generation.masked_input import MaskedJobs, load_word_source, read_masked
from negforge.generation.negatives_table import GENERATED_FIELDS, NegativesTable
from negforge.generation.progress import RunProgress
from negforge.generation.prompts import PromptTemplate, load_template
from negforge.generation.ratelimit import RateLimiter
from negforge.query_view import by_query

if TYPE_CHECKING:
    from negforge.plausibility.gate import PlausibilityGate

__all__ = [
    "GenerationSummary",
    "generate_negatives",
]

Filler = RandomFiller | LLMFiller


def _template_for(config: GenerateConfig) -> PromptTemplate | None:
    if config.is_random:
        return None
    return load_template(config.prompt_template, config.prompt_version)


def _run_key(
    config: GenerateConfig,
    spec: BackendSpec | None,
    template: PromptTemplate | None,
    input_hashes: Sequence[str],
) -> str:
    """Identity of a run's rows: inputs and output settings (not ``limit``, not speed knobs)."""
    settings = {k: v for k, v in config.output_settings().items() if k != "limit"}
    document = {
        "inputs": list(input_hashes),
        "settings": settings,
        "backend": [spec.provider, spec.model, spec.wire_format] if spec else "random",
        "template": template.label if template else None,
    }
    if config.rank_fill:  # the fill method's version: a changed method is another run
        from negforge.generation.rank_fill import RANK_VERSION

        document["method"] = RANK_VERSION
    encoded = json.dumps(document, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _journalled_rows(entries: dict[str, dict[str, Any]]) -> dict[str, list[GeneratedLevel]]:
    """The rows of the journal's finished queries (an entry that does not validate is redone)."""
    out: dict[str, list[GeneratedLevel]] = {}
    for qid, entry in entries.items():
        with contextlib.suppress(ValidationError):
            out[qid] = GENERATED_LEVELS.validate_python(entry.get("rows"))
    return out


def _finished_rows_of_output(
    output_path: Path, run_key: str
) -> dict[str, list[GeneratedLevel]]:
    """Queries a finished artifact of the same run holds (those without backend errors)."""
    if not output_path.exists():
        return {}
    try:
        provenance = read_provenance(output_path)
        if provenance.kind != "negatives" or getattr(provenance, "run_key", None) != run_key:
            return {}
        table, _ = read_artifact(output_path, "negatives")
        generated = ["level", *GENERATED_FIELDS]
        by_qid = {
            query.qid: GENERATED_LEVELS.validate_python(
                [{name: row[name] for name in generated} for row in query.rows]
            )
            for query in by_query(table.select(["qid", *generated]).to_pylist())
        }
    except (NegforgeError, OSError, ValueError):  # ValueError: pydantic's ValidationError too
        return {}
    return {
        qid: rows
        for qid, rows in by_qid.items()
        if not any(BACKEND_ERROR in row.invalid_reasons for row in rows)
    }


async def _run_jobs(
    jobs: Sequence[QueryJob],
    fill: Callable[[QueryJob], Coroutine[Any, Any, QueryOutcome]],
    record: Callable[[QueryOutcome], None],
    concurrency: int,
    stopping: Callable[[], bool] | None = None,
) -> None:
    """Run ``fill`` over the jobs with ``concurrency`` workers; the first fatal error stops all.

    Once ``stopping()`` is true no worker starts another job (those in flight finish).
    """
    iterator = iter(jobs)

    async def worker() -> None:
        for job in iterator:  # workers share one iterator: each job runs once
            if stopping is not None and stopping():
                return
            record(await fill(job))

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(jobs))))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # Retrieve every worker's exception (several may fail at once), raise the first.
    errors = [error for task in done if (error := task.exception()) is not None]
    if errors:
        raise errors[0]


def _check_dictionary(
    jobs: MaskedJobs, dictionary: WordSource, dictionary_path: Path, masked_path: Path
) -> None:
    """Every type the masks need has a dictionary word (the random fill draws from it)."""
    for word_type, (qid, row) in jobs.first_rows_of_types().items():
        if not dictionary.words(word_type):
            raise InputError(
                f"the dictionary has no {word_type}, but masks need one (first: query {qid}, "
                f"row {row} of {masked_path}); build it from more queries or mask with "
                f"--exclude-types {word_type}",
                path=dictionary_path,
                field=word_type,
            )


def _kept(done: int, journal: Path) -> str:
    return f"{done} finished queries are kept in {journal}" if done else "no query finished"


def _failure_message(
    *,
    output: Path,
    failed: Sequence[QueryOutcome],
    queries: int,
    allowed: int,
    config: GenerateConfig,
    kept: str,
    not_attempted: int,
) -> str:
    last = (failed[-1].error or "unknown error").rstrip(". ")
    share = f"{len(failed) / queries:.0%}" if queries else "0%"
    skipped = f"; {not_attempted} queries were not attempted" if not_attempted else ""
    return (
        f"{output}: the LLM backend failed on {len(failed)} of {queries} queries ({share}) "
        f"after every retry, more than --max-failed {config.max_failed:g} allows ({allowed})"
        f"{skipped}; last error: {last}; {kept}"
    )


def generate_negatives(
    masked_path: Path,
    dictionary_path: Path,
    output_path: Path,
    config: GenerateConfig,
    *,
    fingerprint: str | None = None,
    allow_empty: bool = False,
) -> GenerationSummary:
    """Generate one hard negative per (query, level) and write the negatives artifact.

    Resumable: queries finished by an interrupted run with the same inputs and settings are
    taken from its journal (or finished artifact) and cost no call. ``fingerprint`` is stored
    in the provenance (the pipeline's stage fingerprint).

    Failed work is loud: when more queries fail (after every retry) than
    ``config.max_failed`` allows, :class:`GenerationFailed` (exit code 3) is raised with the
    last backend error, after the finished queries are safe in the journal. With
    ``on_failed="error"`` no artifact is written (and no further query is started once the
    run has failed); with ``random`` or ``drop`` the artifact is written with those rows
    flagged, then the error is raised all the same.
    """
    from negforge.atomic import check_output
    from negforge.readers import empty_input_error

    started = time.perf_counter()
    masked_path, dictionary_path, output_path = (
        Path(masked_path),
        Path(dictionary_path),
        Path(output_path),
    )
    if config.dry_run:
        raise ConfigError("dry_run is set: call estimate_generation() to get the estimate")
    check_output(output_path, inputs=[masked_path, dictionary_path])
    check_output(journal_path_for(output_path), inputs=[masked_path, dictionary_path],
                 what="run journal")  # fmt: skip
    with gc_paused():  # tens of thousands of rows: acyclic, freed by reference counting
        masked_input = read_masked(masked_path)
    jobs, masked_provenance = masked_input.jobs, masked_input.provenance
    if not jobs and not allow_empty:
        raise empty_input_error(masked_path)
    if config.limit is not None:
        jobs = jobs[: config.limit]
    dictionary = load_word_source(dictionary_path)
    if config.is_random or "random" in (config.on_invalid, config.on_failed):
        _check_dictionary(jobs, dictionary, dictionary_path, masked_path)
    template = _template_for(config)
    spec = None if config.is_random else resolve_backend(config)
    if config.rank_fill:
        from negforge.generation.rank_fill import rank_backend_spec

        spec = rank_backend_spec(config)
    input_hashes = [artifact_sha256(masked_path), sha256_file(dictionary_path)]
    run_key = _run_key(config, spec, template, input_hashes)

    levels_of = {slot.qid: slot.levels for slot in jobs.slots}  # the queries of this run
    finished: dict[str, list[GeneratedLevel]] = {}
    if config.resume:
        finished.update(_finished_rows_of_output(output_path, run_key))
    # The cache first: a cache that cannot be opened stops the run before any file is made.
    # (the rank fill asks no server: nothing to cache)
    cache = (None if spec is None or config.no_cache or config.rank_fill
             else BatchedWriteCache(config.resolved_cache_dir()))  # fmt: skip
    try:
        journal = RunJournal.open(journal_path_for(output_path), run_key, resume=config.resume)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    finished.update(_journalled_rows(journal.entries))
    # Rows that do not hold exactly the query's levels (a damaged journal) are redone.
    finished = {qid: rows for qid, rows in finished.items()
                if sorted(row.level for row in rows) == levels_of.get(qid)}  # fmt: skip
    pending = jobs.excluding(finished)
    output = NegativesTable(jobs)
    for qid, rows in finished.items():
        output.put(qid, rows)
    allowed = math.floor(config.max_failed * len(jobs) + 1e-9)
    failed: list[QueryOutcome] = []

    def doomed() -> bool:
        """The run has failed already: start no query, retry no call."""
        return config.on_failed == "error" and len(failed) > allowed

    tally = RunTally()  # what the queries of this run did
    batch_summary: dict[str, Any] | None = None  # --batch: cost and what the Batch API did
    try:
        with inputs_frozen(), RunProgress(len(jobs), quiet=config.quiet) as progress:
            for _ in range(len(finished)):
                progress.advance()

            # Journal what cost a call (or everything, without a cache); answers that came
            # from the cache, and the random baseline, are recomputed cheaply on a rerun.
            journal_all = not config.is_random and config.no_cache

            def record(outcome: QueryOutcome) -> None:
                if not outcome.failed and (outcome.calls or journal_all):
                    journal.append(outcome.journal_entry())
                if outcome.failed:
                    failed.append(outcome)
                tally.add(outcome)
                output.put(outcome.qid, outcome.rows)
                progress.advance(
                    cache_hits=outcome.cache_hits, errors=1 if outcome.failed else 0
                )

            if pending:
                from negforge.plausibility.gate import open_gate

                with open_gate(config) as gate:  # None unless --min-plausibility
                    if spec is None or template is None:
                        random_filler = RandomFiller(config, dictionary, gate)
                        asyncio.run(_run_jobs(pending, random_filler.fill, record, 1))
                    elif config.rank_fill:
                        from negforge.generation.rank_fill import run_rank_fill

                        asyncio.run(run_rank_fill(
                            pending, config, dictionary, dictionary_path, gate,
                            lambda fill: _run_jobs(pending, fill, record, config.concurrency,
                                                   doomed),
                        ))  # fmt: skip
                    elif config.batch:
                        batch_summary = _run_batch(pending, config, spec, template, dictionary,
                                                   cache, record, journal, progress,
                                                   gate)  # fmt: skip
                    else:
                        llm_run = _run_llm(pending, config, spec, template, dictionary, cache,
                                           record, doomed, gate)  # fmt: skip
                        asyncio.run(llm_run)
    except FatalCallError as exc:
        journal.keep()
        done = len(finished) + tally.queries - tally.failed_queries
        raise FatalCallError(
            f"generation stopped: {exc}. {_kept(done, journal.path)}; rerun the same command "
            "to continue",
            status=exc.status,
        ) from exc
    except BaseException:
        journal.keep()
        raise
    finally:
        if cache is not None:
            cache.close()

    done = len(finished) + tally.queries - tally.failed_queries
    if doomed():
        journal.keep()
        raise GenerationFailed(_failure_message(
            output=output_path, failed=failed, queries=len(jobs), allowed=allowed,
            config=config, not_attempted=len(pending) - tally.queries,
            kept=f"{_kept(done, journal.path)} and no artifact was written; rerun the same "
            "command to retry the failed queries (finished ones cost nothing), or pass "
            "--on-failed random|drop to write the artifact with the failed rows flagged",
        ))  # fmt: skip

    meta_backend = "random" if spec is None else spec.provider
    meta_model = "random" if spec is None else spec.model
    prompt_label = template.label if template else None
    if config.rank_fill:  # no prompt: the rows' prompt_version names the fill method
        from negforge.generation.rank_fill import RANK_VERSION

        prompt_label = RANK_VERSION
    with gc_paused():  # tens of thousands of output values: acyclic, as the input
        table = output.table()
        summary = summarise_run(
            config=config,
            meta_backend=meta_backend,
            meta_model=meta_model,
            prompt_label=prompt_label,
            rows=table.num_rows,
            valid_rows=output.valid_rows,
            queries=len(jobs),
            resumed=len(finished),
            tally=tally,
            wall_s=time.perf_counter() - started,
            price_model=price_model(spec),
            cache_failure=cache.failure if cache is not None else None,
        )
    if batch_summary is not None:
        summary = summary.model_copy(update=batch_summary)
    provenance = Provenance(
        kind="negatives",
        schema_version=SCHEMA_VERSIONS["negatives"],
        input_files=[str(masked_path), str(dictionary_path)],
        input_sha256=input_hashes,
        spacy_model=masked_provenance.spacy_model,
        spacy_version=masked_provenance.spacy_version,
        ratios=masked_provenance.ratios,
        settings={
            **_jsonable(config.output_settings()),
            "backend": meta_backend,
            "model": meta_model,
            "api_base": redact_url(spec.api_base) if spec else None,
            "prompt": prompt_label,
            "on_failed": config.on_failed,
            "max_failed": config.max_failed,
        },
        fingerprint=fingerprint,
        summary=summary.model_dump(),
        **{"run_key": run_key},  # an extra provenance field (Provenance allows extras)
    )
    write_artifact(output_path, table, provenance)
    journal.discard()
    if len(failed) > allowed:  # a fallback was chosen: the artifact is written, still exit 3
        kind = "random-baseline fills (fallback 'random_after_error')" \
            if config.on_failed == "random" else "rows without a negative"  # fmt: skip
        raise GenerationFailed(_failure_message(
            output=output_path, failed=failed, queries=len(jobs), allowed=allowed,
            config=config, not_attempted=0,
            kept=f"the artifact was written with their {summary.failed_rows} rows as {kind}; "
            "rerun the same command to retry them",
        ))  # fmt: skip
    return summary


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=str))


async def _run_llm(
    jobs: Sequence[QueryJob],
    config: GenerateConfig,
    spec: BackendSpec,
    template: PromptTemplate,
    dictionary: WordSource,
    cache: ResponseCache | None,
    record: Callable[[QueryOutcome], None],
    stopping: Callable[[], bool] | None = None,
    gate: PlausibilityGate | None = None,
) -> None:
    client = make_client(spec, config)
    try:
        filler = LLMFiller(
            config=config,
            spec=spec,
            client=client,
            template=template,
            dictionary=dictionary,
            cache=cache,
            limiter=RateLimiter(config.rpm, config.tpm),
            stopping=stopping,
            gate=gate,
        )
        await _run_jobs(jobs, filler.fill, record, config.concurrency, stopping)
    finally:
        await client.aclose()


def _run_batch(
    jobs: Sequence[QueryJob],
    config: GenerateConfig,
    spec: BackendSpec,
    template: PromptTemplate,
    dictionary: WordSource,
    cache: ResponseCache | None,
    record: Callable[[QueryOutcome], None],
    journal: RunJournal,
    progress: RunProgress,
    gate: PlausibilityGate | None = None,
) -> dict[str, Any]:
    """``--batch``: the jobs through the Batch API (negforge.generation.batch_runner)."""
    from negforge.generation.batch_runner import run_batch_jobs, summary_fields

    report = asyncio.run(run_batch_jobs(
        list(jobs), config=config, spec=spec, template=template, dictionary=dictionary,
        cache=cache, record=record, journal=journal, progress=progress, gate=gate,
    ))  # fmt: skip
    return summary_fields(report, price_model(spec))
