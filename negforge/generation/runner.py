"""``generate``: fill a masked artifact's levels with hard negatives, resumably and concurrently.

:func:`generate_negatives` reads the masked artifact and the dictionary, skips the queries an
earlier run of the same settings already finished (its journal, or its finished artifact),
fills the rest with ``--concurrency`` asyncio workers, journals each finished query at once,
and finally writes the negatives artifact atomically with the run summary in its provenance.
:func:`estimate_generation` is ``--dry-run``: calls, tokens and cost, nothing spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from negforge.artifacts import (
    ARROW_SCHEMAS,
    SCHEMA_VERSIONS,
    MaskedLevel,
    NegativeRow,
    PrimitiveType,
    Provenance,
    artifact_sha256,
    read_artifact,
    read_provenance,
    sha256_file,
    write_artifact,
)
from negforge.errors import ConfigError, InputError, NegforgeError
from negforge.generation.accounting import (
    GenerationEstimate,
    GenerationSummary,
    cost_usd,
    count_tokens,
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
from negforge.generation.progress import RunProgress
from negforge.generation.prompts import PromptTemplate, level_key, load_template
from negforge.generation.ratelimit import RateLimiter
from negforge.generation.sampling import FrozenDictionary

if TYPE_CHECKING:
    from negforge.plausibility.gate import PlausibilityGate

__all__ = [
    "GenerationEstimate",
    "GenerationSummary",
    "estimate_generation",
    "generate_negatives",
    "load_jobs",
]

Filler = RandomFiller | LLMFiller


#: The fields a generation run adds to a masked row (NegativeRow minus MaskedLevel).
GENERATED_FIELDS: tuple[str, ...] = tuple(
    name for name in NegativeRow.model_fields if name not in MaskedLevel.model_fields
)
_MASKED_SCHEMA = ARROW_SCHEMAS["masked"]
_LEVELS: TypeAdapter[list[MaskedLevel]] = TypeAdapter(list[MaskedLevel])


@dataclass
class MaskedInput:
    """A masked artifact as read: its table, provenance and one job per query."""

    table: pa.Table
    provenance: Provenance
    jobs: list[QueryJob]


def _check_masked_schema(table: pa.Table, path: Path) -> None:
    for expected in _MASKED_SCHEMA:
        if expected.name not in table.column_names:
            raise InputError("column missing", path=path, field=expected.name)
        found = table.schema.field(expected.name).type
        if found != expected.type:
            raise InputError(f"type {found}, expected {expected.type}", path=path,
                             field=expected.name)  # fmt: skip


def _check_level(level: MaskedLevel, path: Path, line: int) -> None:
    """The consistency checks a masked row needs beyond its field types."""
    masks = len(level.masked_positions)
    for name in ("original_words", "original_lemmas", "types"):
        if len(getattr(level, name)) != masks:
            raise InputError(f"{len(getattr(level, name))} entries for {masks} masks",
                             path=path, line=line, field=name)  # fmt: skip
    if any(not 0 <= position < len(level.tokens) for position in level.masked_positions):
        raise InputError("a masked position lies outside the tokens", path=path, line=line,
                         field="masked_positions")  # fmt: skip
    if not level.qid:
        raise InputError("empty qid", path=path, line=line, field="qid")


def read_masked(masked_path: Path) -> MaskedInput:
    """Read a masked artifact into one job per query (levels ascending), in file order.

    Every row is validated (pydantic) and checked for consistency, errors naming row and field.
    """
    masked_path = Path(masked_path)
    table, provenance = read_artifact(masked_path, "masked")
    _check_masked_schema(table, masked_path)
    names = [field.name for field in _MASKED_SCHEMA]
    rows = table.select(names).to_pylist()
    try:  # one call for all rows: several times faster than a model_validate per row
        levels = _LEVELS.validate_python(rows)
    except ValidationError as exc:
        error = exc.errors()[0]
        index = int(error["loc"][0])
        field = ".".join(str(part) for part in error["loc"][1:])
        raise InputError(error["msg"], path=masked_path, line=index + 1, field=field) from exc
    jobs: dict[str, QueryJob] = {}
    for index, level in enumerate(levels):
        _check_level(level, masked_path, index + 1)
        job = jobs.get(level.qid)
        if job is None:
            job = jobs[level.qid] = QueryJob(qid=level.qid, levels=[], row_indices=[])
        if any(existing.level == level.level for existing in job.levels):
            raise InputError(f"query {level.qid} has level {level.level} twice",
                             path=masked_path, line=index + 1, field="level")  # fmt: skip
        job.levels.append(level)
        job.row_indices.append(index)
    for job in jobs.values():
        order = sorted(range(len(job.levels)), key=lambda i: job.levels[i].level)
        job.levels = [job.levels[i] for i in order]
        job.row_indices = [job.row_indices[i] for i in order]
    return MaskedInput(table=table, provenance=provenance, jobs=list(jobs.values()))


def load_jobs(masked_path: Path) -> tuple[list[QueryJob], Provenance]:
    """The masked artifact as one job per query (levels ascending), in file order."""
    masked = read_masked(masked_path)
    return masked.jobs, masked.provenance


def load_word_source(dictionary_path: Path) -> WordSource:
    """The POS dictionary D (``negforge.dictionary.load_dictionary``)."""
    from negforge.dictionary import load_dictionary

    return FrozenDictionary(load_dictionary(dictionary_path))


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


def _finished_rows_of_output(
    output_path: Path, run_key: str
) -> dict[str, dict[str, Any]]:
    """Queries a finished artifact of the same run holds (those without backend errors)."""
    if not output_path.exists():
        return {}
    try:
        provenance = read_provenance(output_path)
        if provenance.kind != "negatives" or getattr(provenance, "run_key", None) != run_key:
            return {}
        table, _ = read_artifact(output_path, "negatives")
    except (NegforgeError, OSError, ValueError):
        return {}
    generated = ["level", *GENERATED_FIELDS]
    by_qid: dict[str, dict[str, Any]] = {}
    for row in table.select(["qid", *generated]).to_pylist():
        entry = by_qid.setdefault(row["qid"], {"qid": row["qid"], "rows": []})
        entry["rows"].append({name: row[name] for name in generated})
    return {
        qid: entry
        for qid, entry in by_qid.items()
        if not any(BACKEND_ERROR in row["invalid_reasons"] for row in entry["rows"])
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


def _summarise(
    *,
    config: GenerateConfig,
    meta_backend: str,
    meta_model: str,
    prompt_label: str | None,
    all_rows: Sequence[dict[str, Any]],
    queries: int,
    resumed: int,
    outcomes: Sequence[QueryOutcome],
    wall_s: float,
    price_model: str | None,
    cache_failure: str | None = None,
) -> GenerationSummary:
    generated_rows = [row for outcome in outcomes for row in outcome.rows]
    invalid = [row for row in generated_rows if not row["valid"] or row["fallback"] is not None]
    reasons: dict[str, int] = {}
    for row in invalid:
        for code in row["invalid_reasons"]:
            reasons[code] = reasons.get(code, 0) + 1
    input_tokens = sum(outcome.input_tokens for outcome in outcomes)
    output_tokens = sum(outcome.output_tokens for outcome in outcomes)
    return GenerationSummary(
        backend=meta_backend,
        model=meta_model,
        prompt_version=prompt_label,
        queries=queries,
        rows=len(all_rows),
        resumed_queries=resumed,
        generated_queries=len(outcomes),
        calls=sum(outcome.calls for outcome in outcomes),
        cache_hits=sum(outcome.cache_hits for outcome in outcomes),
        retries=sum(outcome.retries for outcome in outcomes),
        reasks=sum(outcome.reasks for outcome in outcomes),
        fallbacks=sum(1 for row in generated_rows if row["fallback"] is not None),
        dropped=sum(1 for row in generated_rows if row["negative"] is None),
        failed_queries=sum(1 for outcome in outcomes if outcome.failed),
        failed_rows=sum(len(outcome.rows) for outcome in outcomes if outcome.failed),
        on_failed=config.on_failed,
        last_error=next((o.error for o in reversed(outcomes) if o.failed and o.error), None),
        cache_failure=cache_failure,
        invalid_rows=len(invalid),
        invalid_rate=len(invalid) / len(generated_rows) if generated_rows else 0.0,
        valid_rows=sum(1 for row in all_rows if row["valid"]),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(price_model, input_tokens, output_tokens),
        wall_s=round(wall_s, 3),
        reasons=reasons,
    )


def _price_model(spec: BackendSpec | None) -> str | None:
    """The model to price (None: free, e.g. the random baseline or a local server)."""
    if spec is None or spec.provider == "local":
        return None
    return spec.model


def _check_dictionary(
    jobs: Sequence[QueryJob], dictionary: WordSource, dictionary_path: Path, masked_path: Path
) -> None:
    """Every type the masks need has a dictionary word (the random fill draws from it)."""
    needed: dict[PrimitiveType, tuple[str, int]] = {}
    for job in jobs:
        for level, row in zip(job.levels, job.row_indices, strict=True):
            for word_type in level.types:
                needed.setdefault(word_type, (job.qid, row + 1))
    for word_type, (qid, row) in needed.items():
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

    wanted = {job.qid for job in jobs}
    finished: dict[str, dict[str, Any]] = {}
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
    finished.update(journal.entries)
    finished = {qid: entry for qid, entry in finished.items() if qid in wanted}
    pending = [job for job in jobs if job.qid not in finished]
    allowed = math.floor(config.max_failed * len(jobs) + 1e-9)
    failed: list[QueryOutcome] = []

    def doomed() -> bool:
        """The run has failed already: start no query, retry no call."""
        return config.on_failed == "error" and len(failed) > allowed

    outcomes: list[QueryOutcome] = []
    batch_summary: dict[str, Any] | None = None  # --batch: cost and what the Batch API did
    try:
        with RunProgress(len(jobs), quiet=config.quiet) as progress:
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
                outcomes.append(outcome)
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
        done = len(finished) + sum(1 for outcome in outcomes if not outcome.failed)
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

    done = len(finished) + sum(1 for outcome in outcomes if not outcome.failed)
    if doomed():
        journal.keep()
        raise GenerationFailed(_failure_message(
            output=output_path, failed=failed, queries=len(jobs), allowed=allowed,
            config=config, not_attempted=len(pending) - len(outcomes),
            kept=f"{_kept(done, journal.path)} and no artifact was written; rerun the same "
            "command to retry the failed queries (finished ones cost nothing), or pass "
            "--on-failed random|drop to write the artifact with the failed rows flagged",
        ))  # fmt: skip

    by_qid = {outcome.qid: {"rows": outcome.rows} for outcome in outcomes}
    by_qid.update(finished)
    generated_rows: list[dict[str, Any]] = []
    for job in jobs:
        generated = {row["level"]: row for row in by_qid[job.qid]["rows"]}
        generated_rows.extend(generated[level.level] for level in job.levels)
    table = _negatives_table(masked_input.table, jobs, generated_rows)

    meta_backend = "random" if spec is None else spec.provider
    meta_model = "random" if spec is None else spec.model
    prompt_label = template.label if template else None
    if config.rank_fill:  # no prompt: the rows' prompt_version names the fill method
        from negforge.generation.rank_fill import RANK_VERSION

        prompt_label = RANK_VERSION
    summary = _summarise(
        config=config,
        meta_backend=meta_backend,
        meta_model=meta_model,
        prompt_label=prompt_label,
        all_rows=generated_rows,
        queries=len(jobs),
        resumed=len(finished),
        outcomes=outcomes,
        wall_s=time.perf_counter() - started,
        price_model=_price_model(spec),
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


def _negatives_table(
    masked: pa.Table, jobs: Sequence[QueryJob], generated_rows: Sequence[dict[str, Any]]
) -> pa.Table:
    """The masked rows of the jobs (in job and level order) plus the generated columns."""
    indices = pa.array([index for job in jobs for index in job.row_indices], type=pa.int64())
    base = masked.select([field.name for field in _MASKED_SCHEMA]).take(indices)
    schema = ARROW_SCHEMAS["negatives"]
    generated = [
        pa.array([row[name] for row in generated_rows], type=schema.field(name).type)
        for name in GENERATED_FIELDS
    ]
    return pa.Table.from_arrays([*base.columns, *generated], schema=schema)


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
    return summary_fields(report, _price_model(spec))


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
    rows = sum(len(job.levels) for job in jobs)
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
    online_cost = cost_usd(_price_model(spec), input_tokens, output_tokens)
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
        cost_usd=cost_usd(_price_model(spec), input_tokens, output_tokens, batch=config.batch),
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

