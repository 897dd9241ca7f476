"""``score-plausibility``: every row of a negatives artifact or a query file, scored.

A negatives artifact (``negatives`` or an earlier ``scored_negatives``) becomes a
``scored_negatives`` artifact: its rows unchanged plus ``plausibility_nll`` (of the negative;
None without one), ``plausibility_tokens``, ``plausibility_query_nll`` (of the positive
query) and ``plausibility_delta`` (their difference). Any query file ``negforge read``
accepts (jsonl, benchmark json, csv, parquet) becomes a ``scored_queries`` artifact: the
query fields plus ``plausibility_nll`` and ``plausibility_tokens``.

Texts are scored as written (outer whitespace stripped), each distinct text once, through
the score cache (:mod:`negforge.plausibility.cache`): a rerun, or a run killed part-way,
takes what was scored from the cache and loads no model when nothing is missing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from negforge.artifacts import (
    ARROW_SCHEMAS,
    SCHEMA_VERSIONS,
    Provenance,
    artifact_sha256,
    read_artifact,
    read_provenance,
    write_artifact,
)
from negforge.errors import InputError
from negforge.plausibility.cache import SCORING_VERSION, ScoreCache
from negforge.plausibility.llama import LlamaSettings
from negforge.plausibility.scorer import SentenceScorer

NEGATIVE_KINDS = ("negatives", "scored_negatives")


class ScoringSummary(BaseModel):
    """What a ``score-plausibility`` run did."""

    input_kind: str  # negatives | queries
    output_kind: str
    rows: int
    texts: int  # texts scored (rows' negatives and queries)
    distinct_texts: int
    cache_hits: int
    computed: int  # texts the model scored
    decode_calls: int
    tokens: int  # tokens the model decoded (padding not counted)
    model: str
    model_sha256: str
    wall_s: float
    level_median_delta: dict[str, float] = Field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary the command prints."""
        rate = self.computed / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"scored {self.rows} {self.input_kind} rows: {self.distinct_texts} distinct texts, "
            f"{self.cache_hits} from the cache, {self.computed} by {self.model} "
            f"({self.decode_calls} decodes, {self.tokens} tokens, {rate:.1f} texts/s)",
        ]
        if self.level_median_delta:
            medians = ", ".join(f"level {k} {v:+.3f}" for k, v in self.level_median_delta.items())
            lines.append(f"median Delta NLL (nats/token): {medians}")
        return lines


def _negatives_source(path: Path) -> bool:
    """Whether ``path`` is a negatives artifact (a file or a dataset folder); False for a
    query file. Another negforge artifact (masked, dictionary, ...) is an error naming it."""
    if path.is_dir():
        kind = read_provenance(path).kind  # a dataset folder, or an error naming the folder
    elif path.suffix.lower() not in (".parquet", ".pq"):
        return False
    else:
        try:
            kind = read_provenance(path).kind
        except InputError:
            return False  # a plain Parquet query file
    if kind not in NEGATIVE_KINDS:
        raise InputError(
            f"expected a negatives artifact or a query file, found a {kind} artifact", path=path
        )
    return True


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def score_plausibility(
    input_path: str | Path,
    output_path: str | Path,
    *,
    settings: LlamaSettings | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    fmt: str | None = None,
    split: str | None = None,
    on_error: str = "raise",
    quiet: bool = True,
    scorer: SentenceScorer | None = None,
    allow_empty: bool = False,
) -> ScoringSummary:
    """Score ``input_path`` (negatives artifact or query file) into ``output_path``.

    The output (and, for a query file, its bad-row report) is checked before any work and
    written together at the end; an input without rows is an error unless ``allow_empty``.
    """
    from negforge.atomic import atomic_files, check_output
    from negforge.generation.progress import RunProgress
    from negforge.readers import ReadResult, empty_input_error, read_queries, report_path

    started = time.perf_counter()
    input_path = Path(input_path)
    output_path = check_output(output_path, inputs=[input_path])
    if not input_path.exists():
        raise InputError("file not found", path=input_path)
    negatives = _negatives_source(input_path)
    result: ReadResult | None = None
    if negatives:
        table, source = read_artifact(input_path)
        if table.num_rows == 0 and not allow_empty:
            raise empty_input_error(input_path)
        base = table.select([field.name for field in ARROW_SCHEMAS["negatives"]])
        queries = [_text(q) for q in base.column("query").to_pylist()]
        texts_of_rows = [_text(n) for n in base.column("negative").to_pylist()]
        for index, query in enumerate(queries):
            if query is None:
                raise InputError("empty query", path=input_path, line=index + 1, field="query")
        wanted = [text for text in (*texts_of_rows, *queries) if text is not None]
        input_kind, output_kind = "negatives", "scored_negatives"
    else:
        check_output(report_path(output_path), inputs=[input_path], what="bad-row report")
        result = read_queries(input_path, fmt=fmt, split=split, on_error=on_error,
                              allow_empty=allow_empty)
        records = result.records
        queries = [_text(record.query) for record in records]
        wanted = [text for text in queries if text is not None]
        input_kind, output_kind = "queries", "scored_queries"
    own_scorer = scorer is None
    cache = ScoreCache(cache_dir) if use_cache and own_scorer else None
    active = scorer or SentenceScorer(settings, cache=cache)
    distinct = list(dict.fromkeys(wanted))
    hits_before, computed_before = active.cache_hits, active.texts_scored
    decodes_before = active.decode_calls
    tokens_before = active.model().tokens_decoded if active.model_loaded else 0
    try:
        with RunProgress(len(distinct), quiet=quiet, description="score", unit="texts") as bar:

            def advance(count: int, from_cache: bool) -> None:
                bar.advance(steps=count, cache_hits=count if from_cache else 0)

            scores = dict(zip(distinct, active.score(distinct, advance), strict=True))
        tokens = (active.model().tokens_decoded if active.model_loaded else 0) - tokens_before
        summary = ScoringSummary(
            input_kind=input_kind,
            output_kind=output_kind,
            rows=len(queries),
            texts=len(wanted),
            distinct_texts=len(distinct),
            cache_hits=active.cache_hits - hits_before,
            computed=active.texts_scored - computed_before,
            decode_calls=active.decode_calls - decodes_before,
            tokens=tokens,
            model=active.model_name,
            model_sha256=active.model_sha256,
            wall_s=0.0,
        )
        if negatives:
            query_nll = [scores[q].nll for q in queries if q is not None]
            nll = [scores[t].nll if t is not None else None for t in texts_of_rows]
            counts = [scores[t].tokens if t is not None else None for t in texts_of_rows]
            delta = [None if n is None else n - q for n, q in zip(nll, query_nll, strict=True)]
            levels = base.column("level").to_pylist()
            per_level: dict[str, list[float]] = {}
            for level, value in zip(levels, delta, strict=True):
                if value is not None:
                    per_level.setdefault(str(level), []).append(value)
            summary.level_median_delta = {
                level: round(_median(values), 4) for level, values in sorted(per_level.items())
            }
            schema = ARROW_SCHEMAS["scored_negatives"]
            out = pa.Table.from_arrays(
                [
                    *base.columns,
                    pa.array(nll, type=pa.float64()),
                    pa.array(counts, type=pa.int32()),
                    pa.array(query_nll, type=pa.float64()),
                    pa.array(delta, type=pa.float64()),
                ],
                schema=schema,
            )
            inputs_settings: dict[str, Any] = {"source_kind": source.kind}
        else:
            out = pa.Table.from_pylist(
                [
                    {
                        "qid": record.qid,
                        "query": record.query,
                        "vid": record.vid,
                        "duration": record.duration,
                        "relevant_windows": [list(w) for w in record.relevant_windows],
                        "plausibility_nll": scores[text].nll,
                        "plausibility_tokens": scores[text].tokens,
                    }
                    for record, text in zip(records, queries, strict=True)
                    if text is not None
                ],
                schema=ARROW_SCHEMAS["scored_queries"],
            )
            inputs_settings = {"format": fmt, "split": split, "on_error": on_error,
                               "bad_rows": len(result.bad_rows) if result else 0}  # fmt: skip
        summary.wall_s = round(time.perf_counter() - started, 3)
        provenance = Provenance(
            kind=output_kind,  # type: ignore[arg-type]
            schema_version=SCHEMA_VERSIONS[output_kind],
            input_files=[str(input_path)],
            input_sha256=[artifact_sha256(input_path)],
            settings={
                "model": active.model_name,
                "model_sha256": active.model_sha256,
                "scoring_version": SCORING_VERSION,
                "score": "mean token NLL (nats) after the model's document-start token",
                **inputs_settings,
            },
            summary=summary.model_dump(),
        )
        with atomic_files() as group:  # the artifact and its bad-row report together
            if result is not None:
                result.write_report(report_path(output_path), group)
            write_artifact(output_path, out, provenance, group)
    finally:
        if own_scorer:
            active.close()
        if cache is not None:
            cache.close()
    return summary
