"""``negforge run PIPELINE.yaml --engine ray``: build-dict, mask and generate on Ray Data.

The pipeline runner (:func:`negforge.pipeline.run_pipeline`) keeps its stage order, inputs,
outputs, fingerprints and skip logic; :class:`RayEngine` runs three stage kinds its way:

* **build-dict** -- the validated queries (read on the driver by the same reader as the local
  engine) are cut into shards of ``shard_size`` queries; a map stage parses each shard with
  spaCy (one pipeline per worker process, the same parse cache) and emits its partial
  ``(type, word, lemma)`` counts; the global reduce sums them as they stream to the driver
  (D is small; a ``groupby`` shuffle costs ~15 s of fixed overhead on 2 cores for nothing),
  and the driver turns the sums into D
  (:func:`negforge.dictionary.dictionary_from_lemma_counts`), equal to the local engine's
  :func:`~negforge.dictionary.count_dictionary` of the whole corpus (entries and dropped
  non-words); both engines parse through :func:`negforge.nlp.parse_queries`;
* **mask** -- a map stage parses (a cache hit after build-dict) and masks each shard
  (:func:`negforge.masking.mask_table`) and writes it as one part of a partitioned artifact
  (:mod:`negforge.datasets`);
* **generate** -- a map over the masked artifact's parts, at most ``workers`` at a time, each
  running :func:`negforge.generation.runner.generate_negatives` on its part (journal, cache,
  retries, validation: the local stage itself), shard ``i`` against ``api_bases[i % n]``.

Every shard of mask and generate is a part file carrying a fingerprint derived from the
stage's: a rerun (after a killed driver) or a retry (after a killed worker: the map is run
again, up to ``max_retries`` times) recomputes only the missing shards. Workers write the
parts themselves, so on a cluster the output folder must be storage every node sees.

Ray is an optional extra (``pip install 'negforge[ray]'``), imported only here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from negforge.errors import ConfigError, NegforgeError

RAY_HINT = "--engine ray needs Ray: pip install 'negforge[ray]' (scripts/setup.sh installs it)"
KINDS = ("build-dict", "mask", "generate")


def import_ray() -> Any:
    """``ray`` with Ray Data, quiet; a clear error when the extra is not installed."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(f"{RAY_HINT} ({exc})") from exc
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray


@dataclass(frozen=True)
class Shard:
    """Queries ``[start, end)`` of a stage's input, and the shard's own fingerprint."""

    index: int
    start: int
    end: int
    fingerprint: str


def plan_shards(count: int, shard_size: int, stage_fingerprint: str) -> list[Shard]:
    """Consecutive shards of ``shard_size`` items (the last one shorter)."""
    shards = []
    for index in range(max(1, math.ceil(count / shard_size))):
        start, end = index * shard_size, min(count, (index + 1) * shard_size)
        digest = hashlib.sha256(f"{stage_fingerprint}|{index}|{start}|{end}".encode())
        shards.append(Shard(index, start, end, digest.hexdigest()))
    return shards


@dataclass
class RayOptions:
    """How ``--engine ray`` runs."""

    address: str | None = None  # an existing cluster (ray://... or host:port); None: local
    workers: int | None = None  # parallel map tasks (local: also the CPUs Ray gets)
    shard_size: int = 2000  # queries per shard
    api_bases: tuple[str, ...] = ()  # generate: endpoints spread over the shards
    max_retries: int = 3  # reruns of a stage's map after a worker died
    echo: Callable[[str], None] | None = None
    ray_init: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments


# --- work done on the workers (module-level functions: Ray ships them by reference) ----------


def _parse_records(records: Sequence[Any], spacy_model: str | None, cache_dir: str) -> Any:
    from negforge.gc_settings import gc_paused
    from negforge.nlp import parse_queries

    with gc_paused():
        return parse_queries([r.query for r in records], spacy_model, cache_dir=cache_dir)


def _count_shard(batch: dict[str, Any], *, shard_refs: list[Any], spacy_model: str | None,
                 cache_dir: str) -> pa.Table:  # fmt: skip
    """Map stage of build-dict: one shard's partial (type, word, lemma) counts."""
    import ray

    from negforge.dictionary import lemma_counts

    rows: dict[str, list[Any]] = {"type": [], "word": [], "lemma": [], "count": []}
    model = ""
    for index in batch["shard"]:
        parsed = _parse_records(ray.get(shard_refs[int(index)]), spacy_model, cache_dir)
        model = f"{parsed.model.name}=={parsed.model.version}"
        for (kind, word, lemma), count in lemma_counts(parsed.tokens).items():
            rows["type"].append(kind)
            rows["word"].append(word)
            rows["lemma"].append(lemma)
            rows["count"].append(count)
    table = pa.table(rows, schema=pa.schema([("type", pa.string()), ("word", pa.string()),
                                             ("lemma", pa.string()), ("count", pa.int64())]))
    return table.append_column("model", pa.array([model] * table.num_rows, pa.string()))


def _part_done(path: Path, fingerprint: str) -> bool:
    from negforge.artifacts import read_provenance
    from negforge.errors import NegforgeError

    if not path.is_file():
        return False
    try:
        return read_provenance(path).fingerprint == fingerprint
    except (NegforgeError, OSError, ValueError):
        return False


def _mask_shard(batch: dict[str, Any], *, shard_refs: list[Any], shards: list[Shard],
                spacy_model: str | None, cache_dir: str, output: str, ratios: list[str],
                excluded: list[str], base: dict[str, Any]) -> pa.Table:  # fmt: skip
    """Map stage of mask: parse and mask one shard, write it as a part (unless done)."""
    from fractions import Fraction

    import pyarrow.parquet as pq
    import ray

    from negforge.artifacts import Provenance, write_artifact
    from negforge.datasets import part_name
    from negforge.gc_settings import gc_paused
    from negforge.masking import mask_table

    out: dict[str, list[Any]] = {"shard": [], "rows": [], "unmaskable": [], "model": []}
    for index in batch["shard"]:
        shard = shards[int(index)]
        path = Path(output) / part_name(shard.index)
        if _part_done(path, shard.fingerprint):
            provenance = Provenance.model_validate_json(
                pq.read_schema(path).metadata[b"negforge"])
            unmaskable = provenance.summary["unmaskable_qids"]
            rows = provenance.summary["rows"]
            model = f"{provenance.spacy_model}=={provenance.spacy_version}"
        else:
            records = ray.get(shard_refs[shard.index])
            parsed = _parse_records(records, spacy_model, cache_dir)
            with gc_paused():
                table, unmaskable = mask_table(records, parsed.tokens,
                                               [Fraction(r) for r in ratios],
                                               frozenset(excluded))  # fmt: skip
            provenance = Provenance.model_validate({
                **base, "fingerprint": shard.fingerprint, "spacy_model": parsed.model.name,
                "spacy_version": parsed.model.version,
                "summary": {"shard": shard.index, "queries": len(records),
                            "rows": table.num_rows, "unmaskable_qids": unmaskable},
            })  # fmt: skip
            write_artifact(path, table, provenance, sidecar=False)
            rows = table.num_rows
            model = f"{parsed.model.name}=={parsed.model.version}"
        out["shard"].append(shard.index)
        out["rows"].append(rows)
        out["unmaskable"].append(list(unmaskable))
        out["model"].append(model)
    return pa.table(out)


def _generate_shard(batch: dict[str, Any], *, inputs: list[str], shards: list[Shard],
                    dictionary: str, output: str, config: dict[str, Any],
                    api_bases: list[str]) -> pa.Table:  # fmt: skip
    """Map stage of generate: one masked part through the local generate stage."""
    from negforge.artifacts import read_provenance
    from negforge.datasets import part_name
    from negforge.generation.config import GenerateConfig
    from negforge.generation.runner import generate_negatives

    out: dict[str, list[Any]] = {"shard": [], "summary": []}
    for index in batch["shard"]:
        shard = shards[int(index)]
        path = Path(output) / part_name(shard.index)
        if _part_done(path, shard.fingerprint):
            summary = read_provenance(path).summary
        else:
            settings = {**config, "quiet": True}
            if api_bases:
                settings["api_base"] = api_bases[shard.index % len(api_bases)]
            result = generate_negatives(Path(inputs[shard.index]), Path(dictionary), path,
                                        GenerateConfig.model_validate(settings),
                                        fingerprint=shard.fingerprint)  # fmt: skip
            summary = result.model_dump()
        out["shard"].append(shard.index)
        out["summary"].append(json.dumps(summary, sort_keys=True, default=str))
    return pa.table(out)


# --- the engine (driver side) ----------------------------------------------------------------


class RayEngine:
    """Runs build-dict, mask and generate stages on Ray Data (see the module docstring)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        self._ray: Any = None
        self._started = False

    def handles(self, stage: str) -> bool:
        return stage in KINDS

    @property
    def workers(self) -> int:
        return self.options.workers or os.cpu_count() or 1

    def ray(self) -> Any:
        """Ray, initialised on first use (a local instance unless ``address`` is given)."""
        if self._ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                          "logging_level": logging.WARNING,
                                          **self.options.ray_init}  # fmt: skip
                if self.options.address:
                    kwargs["address"] = self.options.address
                else:
                    kwargs.setdefault("num_cpus", self.workers)
                ray.init(**kwargs)
                self._started = True
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False
            self._ray = ray
        return self._ray

    def close(self) -> None:
        """Shut down the Ray instance this engine started."""
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started = None, False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _echo(self, text: str) -> None:
        if self.options.echo is not None:
            self.options.echo(text)

    def _with_retries(self, what: str, run: Callable[[], Any]) -> Any:
        """Run a stage's map; when a worker dies, run it again (done shards are kept)."""
        ray = self.ray()
        for attempt in range(self.options.max_retries + 1):
            try:
                return run()
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, NegforgeError):  # bad input, a failed backend: not Ray's
                    raise cause from None
                if attempt == self.options.max_retries:
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                self._echo(f"[{what}] a Ray worker failed ({first}); resuming the unfinished "
                           "shards")  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    def _shard_dataset(self, shards: Sequence[Shard]) -> Any:
        ray = self.ray()
        items = [{"shard": shard.index} for shard in shards]
        return ray.data.from_items(items, override_num_blocks=len(items))

    def _map(self, dataset: Any, fn: Callable[..., pa.Table], **kwargs: Any) -> Any:
        ray = self.ray()
        return dataset.map_batches(fn, batch_size=1, batch_format="numpy",
                                   compute=ray.data.TaskPoolStrategy(size=self.workers),
                                   fn_kwargs=kwargs)  # fmt: skip

    # --- stages -------------------------------------------------------------------------

    def run(self, stage: Any, inputs: Sequence[Path], output: Path, fingerprint: str, *,
            spacy_model: str | None, cache_dir: Path) -> tuple[str, dict[str, Any]]:  # fmt: skip
        if stage.stage == "build-dict":
            return self._build_dict(stage, inputs, output, fingerprint, spacy_model, cache_dir)
        if stage.stage == "mask":
            return self._mask(stage, inputs[0], output, fingerprint, spacy_model, cache_dir)
        if stage.stage == "generate":
            return self._generate(stage, inputs[0], inputs[1], output, fingerprint)
        raise ConfigError(f"the ray engine does not run {stage.stage!r} stages")

    def _records(self, sources: Sequence[Path], output: Path, on_error: str) -> tuple[
            list[Any], int]:  # fmt: skip
        """The validated queries of the inputs (bad-row reports written as the local stage)."""
        from negforge.readers import read_queries, report_path

        records: list[Any] = []
        bad = 0
        for index, source in enumerate(sources):
            result = read_queries(source, on_error=on_error)
            suffix = "" if len(sources) == 1 else f".{index}"
            result.write_report(report_path(output.with_name(output.name + suffix)))
            records.extend(result.records)
            bad += len(result.bad_rows)
        return records, bad

    def _put_shards(self, records: Sequence[Any], shards: Sequence[Shard]) -> list[Any]:
        ray = self.ray()
        return [ray.put(list(records[s.start:s.end])) for s in shards]

    def _build_dict(self, stage: Any, sources: Sequence[Path], output: Path, fingerprint: str,
                    spacy_model: str | None, cache_dir: Path
                    ) -> tuple[str, dict[str, Any]]:  # fmt: skip
        from collections import Counter

        from negforge.artifacts import write_artifact
        from negforge.atomic import atomic_files
        from negforge.dictionary import (
            dictionary_from_lemma_counts,
            dictionary_provenance,
            entries_table,
            summary_path,
            summary_text,
        )

        records, bad = self._records(sources, output, stage.on_error)
        shards = plan_shards(len(records), self.options.shard_size, fingerprint)
        refs = self._put_shards(records, shards)

        def run() -> tuple[Counter[tuple[str, str, str]], set[str]]:
            partial = self._map(self._shard_dataset(shards), _count_shard, shard_refs=refs,
                                spacy_model=spacy_model, cache_dir=str(cache_dir))  # fmt: skip
            # The global reduce: D is small (tens of thousands of words), so the shards'
            # partial counts stream to the driver and are summed there as they arrive.
            counts: Counter[tuple[str, str, str]] = Counter()
            models: set[str] = set()
            for batch in partial.iter_batches(batch_size=None, batch_format="pyarrow"):
                columns = [batch.column(name).to_pylist()
                           for name in ("type", "word", "lemma", "count")]  # fmt: skip
                for kind, word, lemma, count in zip(*columns, strict=True):
                    counts[(kind, word, lemma)] += count
                models.update(batch.column("model").unique().to_pylist())
            return counts, models

        counts, models = self._with_retries(stage.name or stage.stage, run)
        counted = dictionary_from_lemma_counts(counts)
        entries = counted.entries
        name, version = _model_of(sorted(models), spacy_model)
        provenance = dictionary_provenance(
            sources, counted, spacy_model=name, spacy_version=version,
            settings={"on_error": stage.on_error, "format": None, "split": None},
            fingerprint=fingerprint, queries=len(records), bad_rows=bad,
        )  # fmt: skip
        with atomic_files() as group:  # the artifact and its summary together, as local
            write_artifact(output, entries_table(entries), provenance, group)
            group.write_text(summary_path(output),
                             summary_text(entries, dropped=counted.dropped))  # fmt: skip
        return (f"{len(entries)} words from {len(records)} queries ({len(shards)} shards on "
                f"{self.workers} Ray workers)"), {}  # fmt: skip

    def _mask(self, stage: Any, source: Path, output: Path, fingerprint: str,
              spacy_model: str | None, cache_dir: Path) -> tuple[str, dict[str, Any]]:  # fmt: skip
        from negforge.artifacts import SCHEMA_VERSIONS, sha256_file
        from negforge.datasets import part_name, prepare_folder, write_manifest
        from negforge.masking import masked_provenance, parse_exclude_types, resolve_ratios
        from negforge.readers import detect_format

        chosen = resolve_ratios(stage.preset, stage.ratios)
        excluded = parse_exclude_types(stage.exclude_types)
        records, bad = self._records([source], output, stage.on_error)
        shards = plan_shards(len(records), self.options.shard_size, fingerprint)
        refs = self._put_shards(records, shards)
        prepare_folder(output)
        base = {"kind": "masked", "schema_version": SCHEMA_VERSIONS["masked"],
                "input_files": [str(source)], "input_sha256": [sha256_file(source)],
                "ratios": [float(r) for r in chosen]}  # fmt: skip

        def run() -> list[dict[str, Any]]:
            done = self._map(self._shard_dataset(shards), _mask_shard, shard_refs=refs,
                             shards=shards, spacy_model=spacy_model, cache_dir=str(cache_dir),
                             output=str(output), ratios=[str(r) for r in chosen],
                             excluded=sorted(excluded), base=base)  # fmt: skip
            return sorted(done.take_all(), key=lambda row: int(row["shard"]))

        rows = self._with_retries(stage.name or stage.stage, run)
        unmaskable = [str(q) for row in rows for q in row["unmaskable"]]
        total = sum(int(row["rows"]) for row in rows)
        name, version = _model_of([str(row["model"]) for row in rows], spacy_model)
        provenance = masked_provenance(
            source, spacy_model=name, spacy_version=version, chosen=chosen,
            preset=stage.preset if stage.ratios is None else None, excluded=excluded,
            on_error=stage.on_error, fmt=detect_format(source), split=None,
            fingerprint=fingerprint, queries=len(records), rows=total, levels=len(chosen),
            unmaskable=unmaskable, bad_rows=bad,
        )  # fmt: skip
        write_manifest(output, provenance, [_part(output / part_name(s.index)) for s in shards])
        return (f"{total} rows from {len(records)} queries ({len(shards)} shards on "
                f"{self.workers} Ray workers)"), {}  # fmt: skip

    def _generate(self, stage: Any, masked: Path, dictionary: Path, output: Path,
                  fingerprint: str) -> tuple[str, dict[str, Any]]:  # fmt: skip
        from pydantic import ValidationError

        from negforge.artifacts import artifact_sha256, read_provenance, sha256_file
        from negforge.datasets import part_name, prepare_folder, write_manifest
        from negforge.generation.config import GenerateConfig

        try:
            config = GenerateConfig.model_validate(stage.config())
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise ConfigError(f"stage {stage.name or stage.stage!r}, setting {where!r}: "
                              f"{error['msg']}") from exc  # fmt: skip
        prepare_folder(output)
        inputs = _masked_parts(masked, output, self.options.shard_size)
        shards = [plan_shards(len(inputs), 1, fingerprint)[i] for i in range(len(inputs))]
        started = time.perf_counter()

        def run() -> list[dict[str, Any]]:
            done = self._map(self._shard_dataset(shards), _generate_shard,
                             inputs=[str(p) for p in inputs], shards=shards,
                             dictionary=str(dictionary), output=str(output),
                             config=config.model_dump(mode="json"),
                             api_bases=list(self.options.api_bases))  # fmt: skip
            return sorted(done.take_all(), key=lambda row: int(row["shard"]))

        rows = self._with_retries(stage.name or stage.stage, run)
        summaries = [json.loads(str(row["summary"])) for row in rows]
        merged = _merge_summaries(summaries, time.perf_counter() - started)
        first = read_provenance(output / part_name(0))
        provenance = first.model_copy(update={
            "input_files": [str(masked), str(dictionary)],
            "input_sha256": [artifact_sha256(masked), sha256_file(dictionary)],
            "fingerprint": fingerprint, "summary": merged,
        })  # fmt: skip
        write_manifest(output, provenance, [_part(output / part_name(s.index)) for s in shards])
        shutil.rmtree(output / ".input", ignore_errors=True)  # a single-file input's shards
        return (f"{merged['rows']} rows, {merged['valid_rows']} valid, {merged['calls']} "
                f"backend calls ({len(shards)} shards on {self.workers} Ray workers)"), {}


def _part(path: Path) -> Any:
    import pyarrow.parquet as pq

    from negforge.artifacts import sha256_file
    from negforge.datasets import DatasetPart

    return DatasetPart(name=path.name, rows=pq.ParquetFile(path).metadata.num_rows,
                       sha256=sha256_file(path))  # fmt: skip


def _model_of(labels: Sequence[str], requested: str | None) -> tuple[str | None, str | None]:
    """The spaCy model name and version the shards used (they must agree)."""
    found = sorted({label for label in labels if label})
    if len(found) > 1:
        raise ConfigError(f"Ray workers parsed with different spaCy models: {found}")
    if not found:
        from negforge.nlp import resolve_model

        info = resolve_model(requested)
        return info.name, info.version
    name, version = found[0].split("==", 1)
    return name, version


def _masked_parts(masked: Path, output: Path, shard_size: int) -> list[Path]:
    """The masked artifact as parts: a dataset's own, or a single file cut into shards of
    ``shard_size`` whole queries (written under ``output/.input``)."""
    import pyarrow.parquet as pq

    from negforge.artifacts import read_artifact, write_artifact
    from negforge.datasets import is_dataset, read_manifest

    if is_dataset(masked):
        return [masked / part.name for part in read_manifest(masked).parts]
    table, provenance = read_artifact(masked, "masked")
    staging = output / ".input"
    staging.mkdir(parents=True, exist_ok=True)
    qids = table.column("qid").to_pylist()
    starts = [0, *(i for i in range(1, len(qids)) if qids[i] != qids[i - 1])]  # query rows
    cuts = [*starts[::shard_size], len(qids)]
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        path = staging / f"part-{index:05d}.parquet"
        if not path.is_file() or pq.ParquetFile(path).metadata.num_rows != end - start:
            write_artifact(path, table.slice(start, end - start), provenance, sidecar=False)
        parts.append(path)
    return parts


_SUMMED = ("queries", "rows", "resumed_queries", "generated_queries", "calls", "cache_hits",
           "retries", "reasks", "fallbacks", "dropped", "failed_queries", "invalid_rows",
           "valid_rows", "input_tokens", "output_tokens")  # fmt: skip


def _merge_summaries(summaries: Sequence[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """One generation summary for the whole artifact (counts summed over the shards)."""
    merged: dict[str, Any] = dict(summaries[0]) if summaries else {}
    for name in _SUMMED:
        merged[name] = sum(int(s.get(name) or 0) for s in summaries)
    costs: list[float | None] = [s.get("cost_usd") for s in summaries]
    known = [c for c in costs if c is not None]
    merged["cost_usd"] = sum(known) if len(known) == len(costs) else None
    reasons: dict[str, int] = {}
    for s in summaries:
        for code, count in (s.get("reasons") or {}).items():
            reasons[code] = reasons.get(code, 0) + int(count)
    merged["reasons"] = reasons
    merged["invalid_rate"] = merged["invalid_rows"] / merged["rows"] if merged["rows"] else 0.0
    merged["wall_s"] = round(wall_s, 3)
    merged["shards"] = len(summaries)
    return merged
