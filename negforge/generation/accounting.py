"""Tokens, cost and the run summary.

Prices come from the model map that litellm bundles with its package
(``model_prices_and_context_window_backup.json``), read as a file: nothing is fetched, and
pricing a run does not pay litellm's import time. Token counting for ``--dry-run`` uses
``litellm.token_counter`` (imported lazily with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` and
``HF_HUB_OFFLINE=1``). Batch API prices are the map's ``*_cost_per_token_batches`` where it
lists them, else half the online price (the API's 50 % discount).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from negforge.generation.client import BackendSpec
    from negforge.generation.config import GenerateConfig
    from negforge.generation.filling import QueryOutcome

_PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
#: The Batch API's discount where the price map lists no batch price.
BATCH_DISCOUNT = 0.5


def offline_litellm_environment() -> None:
    """Make litellm use its bundled price map and never reach a model hub."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def import_litellm() -> Any:
    """Import litellm offline (its price map from the package, no telemetry)."""
    offline_litellm_environment()
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class ModelInfo(BaseModel):
    """What litellm's bundled map says about a model (None: not listed)."""

    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    input_cost_per_token_batches: float | None = None
    output_cost_per_token_batches: float | None = None
    supports_response_schema: bool | None = None
    provider: str | None = None


@lru_cache(maxsize=1)
def _price_map() -> dict[str, Any]:
    spec = find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _PRICE_MAP_FILE
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@lru_cache(maxsize=64)
def model_info(model: str) -> ModelInfo | None:
    """The bundled map's entry for a litellm model string (``openai/x`` also tries ``x``)."""
    table = _price_map()
    candidates = [model]
    if "/" in model:
        provider, bare = model.split("/", 1)
        candidates.append(bare)
    else:
        provider = None
    for name in candidates:
        entry = table.get(name)
        if not isinstance(entry, dict):
            continue
        listed = entry.get("litellm_provider")
        if name != model and provider and listed and not str(listed).startswith(provider):
            continue
        return ModelInfo(
            input_cost_per_token=entry.get("input_cost_per_token"),
            output_cost_per_token=entry.get("output_cost_per_token"),
            input_cost_per_token_batches=entry.get("input_cost_per_token_batches"),
            output_cost_per_token_batches=entry.get("output_cost_per_token_batches"),
            supports_response_schema=entry.get("supports_response_schema"),
            provider=listed,
        )
    return None


def cost_usd(
    model: str | None, input_tokens: int, output_tokens: int, *, batch: bool = False
) -> float | None:
    """Dollar cost of the tokens at the bundled prices; None when the model has no price.

    ``batch``: at the Batch API's price (the map's batch price, else half the online one).
    """
    if model is None:
        return 0.0
    if input_tokens == 0 and output_tokens == 0:
        return 0.0
    info = model_info(model)
    if info is None or info.input_cost_per_token is None or info.output_cost_per_token is None:
        return None
    input_price, output_price = info.input_cost_per_token, info.output_cost_per_token
    if batch:
        input_price = (info.input_cost_per_token_batches
                       if info.input_cost_per_token_batches is not None
                       else input_price * BATCH_DISCOUNT)  # fmt: skip
        output_price = (info.output_cost_per_token_batches
                        if info.output_cost_per_token_batches is not None
                        else output_price * BATCH_DISCOUNT)  # fmt: skip
    return input_tokens * input_price + output_tokens * output_price


def count_tokens(model: str, messages: Sequence[Mapping[str, str]] | None = None,
                 text: str | None = None) -> int:
    """Tokens of chat messages (or a text) by litellm's counter; ~4 chars/token if it fails."""
    litellm = import_litellm()
    try:
        if messages is not None:
            return int(litellm.token_counter(model=model, messages=[dict(m) for m in messages]))
        return int(litellm.token_counter(model=model, text=text or ""))
    except Exception:  # unknown tokenizer: fall back to the usual rule of thumb
        chars = sum(len(m.get("content", "")) for m in messages or []) + len(text or "")
        return max(1, chars // 4)


def _cost_text(cost: float | None) -> str:
    return "n/a (no price in litellm's map)" if cost is None else f"${cost:.4f}"


class GenerationSummary(BaseModel):
    """What one ``generate`` run did (also stored in the artifact's provenance)."""

    backend: str
    model: str
    prompt_version: str | None
    queries: int  # queries in the output
    rows: int  # rows in the output (one per query and level)
    resumed_queries: int = 0  # taken from an earlier, interrupted run
    generated_queries: int = 0  # produced by this run
    calls: int = 0  # backend requests sent by this run (re-asks included)
    cache_hits: int = 0  # requests answered from the cache
    retries: int = 0  # transient failures retried
    reasks: int = 0  # requests that asked again after an invalid answer
    fallbacks: int = 0  # rows replaced by --on-invalid random/keep
    dropped: int = 0  # rows left empty by --on-invalid drop
    failed_queries: int = 0  # queries whose calls failed after all retries
    failed_rows: int = 0  # their rows: flagged fallbacks or left empty (--on-failed)
    on_failed: str = "error"  # what the failed rows became (--on-failed)
    last_error: str | None = None  # the last backend error of a failed query (scrubbed)
    cache_failure: str | None = None  # the response cache broke down mid-run (then unused)
    invalid_rows: int = 0  # generated rows whose backend answer stayed invalid
    invalid_rate: float = 0.0  # invalid_rows / generated rows
    valid_rows: int = 0  # output rows whose negative passes validation
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0  # None: the model has no price in litellm's map
    wall_s: float = 0.0
    #: reason code -> generated rows whose answer failed it
    reasons: dict[str, int] = Field(default_factory=dict)
    #: --batch: what the Batch API did (negforge.generation.batch_client.BatchReport)
    batch: dict[str, Any] | None = None

    def lines(self) -> list[str]:
        """A short human-readable report."""
        cost = _cost_text(self.cost_usd)
        lines = [
            f"backend {self.backend}  model {self.model}  prompt {self.prompt_version or '-'}",
            f"rows {self.rows} ({self.queries} queries; {self.generated_queries} generated, "
            f"{self.resumed_queries} resumed)",
            f"calls {self.calls}  cache hits {self.cache_hits}  retries {self.retries}  "
            f"re-asks {self.reasks}",
            f"valid rows {self.valid_rows}/{self.rows}  invalid answers {self.invalid_rows} "
            f"({self.invalid_rate:.1%})  fallbacks {self.fallbacks}  dropped {self.dropped}  "
            f"failed queries {self.failed_queries}",
            f"tokens in {self.input_tokens}  out {self.output_tokens}  cost {cost}",
            f"wall {self.wall_s:.1f} s",
        ]
        if self.reasons:
            detail = ", ".join(f"{code} {count}" for code, count in sorted(self.reasons.items()))
            lines.append(f"invalid answers by reason: {detail}")
        if self.batch is not None:
            b = self.batch
            lines.append(
                f"batch API: {b.get('batches_created', 0)} batches created "
                f"({b.get('batches_resumed', 0)} resumed), {b.get('uploads', 0)} files uploaded, "
                f"{b.get('batch_requests', 0)} requests answered by batches, "
                f"{b.get('online_requests', 0)} online; cost at batch price"
            )
        if self.failed_queries:
            became = ("random-baseline fills (fallback random_after_error)"
                      if self.on_failed == "random" else "rows without a negative")
            lines.append(
                f"warning: {self.failed_queries} queries failed after every retry; their "
                f"{self.failed_rows} rows are {became}; last error: {self.last_error}"
            )
        if self.cache_failure:
            lines.append(f"warning: the response cache failed ({self.cache_failure}); "
                         "answers after that were not cached")  # fmt: skip
        return lines


class GenerationEstimate(BaseModel):
    """What ``--dry-run`` predicts before anything is spent."""

    backend: str
    model: str
    queries: int
    rows: int
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cached_calls: int = 0  # first requests already in the cache (not paid again)
    batch: bool = False  # priced for the Batch API
    online_cost_usd: float | None = None  # --batch: the same calls at the online price
    batch_files: int = 0  # --batch: batch input files the first round needs

    def lines(self) -> list[str]:
        cost = _cost_text(self.cost_usd)
        return [
            f"dry run: backend {self.backend}  model {self.model}",
            f"queries {self.queries}  rows {self.rows}",
            f"calls {self.calls} (one per query, before re-asks; {self.cached_calls} already "
            "cached)",
            f"estimated tokens in {self.input_tokens}  out {self.output_tokens}",
            f"estimated cost {cost}" + (
                f" at the Batch API price ({self.batch_files} batch files; online "
                f"{_cost_text(self.online_cost_usd)})" if self.batch else ""
            ),
        ]


def price_model(spec: BackendSpec | None) -> str | None:
    """The model to price (None: free, e.g. the random baseline or a local server)."""
    if spec is None or spec.provider == "local":
        return None
    return spec.model


@dataclass
class RunTally:
    """What the queries a run generated did, added up as each finishes (:meth:`add`)."""

    queries: int = 0
    rows: int = 0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    fallbacks: int = 0
    dropped: int = 0
    invalid_rows: int = 0
    failed_queries: int = 0
    failed_rows: int = 0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: QueryOutcome) -> None:
        """Count one finished query."""
        self.queries += 1
        self.rows += len(outcome.rows)
        self.calls += outcome.calls
        self.cache_hits += outcome.cache_hits
        self.retries += outcome.retries
        self.reasks += outcome.reasks
        self.input_tokens += outcome.input_tokens
        self.output_tokens += outcome.output_tokens
        if outcome.failed:
            self.failed_queries += 1
            self.failed_rows += len(outcome.rows)
            if outcome.error:
                self.last_error = outcome.error
        for row in outcome.rows:
            if row.fallback is not None:
                self.fallbacks += 1
            if row.negative is None:
                self.dropped += 1
            if not row.valid or row.fallback is not None:
                self.invalid_rows += 1
                for code in row.invalid_reasons:
                    self.reasons[code] = self.reasons.get(code, 0) + 1


def summarise_run(
    *,
    config: GenerateConfig,
    meta_backend: str,
    meta_model: str,
    prompt_label: str | None,
    rows: int,
    valid_rows: int,
    queries: int,
    resumed: int,
    tally: RunTally,
    wall_s: float,
    price_model: str | None,
    cache_failure: str | None = None,
) -> GenerationSummary:
    """The summary of a run: ``rows``/``valid_rows`` of its whole output (resumed queries
    included) and the ``tally`` of the queries it generated."""
    return GenerationSummary(
        backend=meta_backend,
        model=meta_model,
        prompt_version=prompt_label,
        queries=queries,
        rows=rows,
        resumed_queries=resumed,
        generated_queries=tally.queries,
        calls=tally.calls,
        cache_hits=tally.cache_hits,
        retries=tally.retries,
        reasks=tally.reasks,
        fallbacks=tally.fallbacks,
        dropped=tally.dropped,
        failed_queries=tally.failed_queries,
        failed_rows=tally.failed_rows,
        on_failed=config.on_failed,
        last_error=tally.last_error,
        cache_failure=cache_failure,
        invalid_rows=tally.invalid_rows,
        invalid_rate=tally.invalid_rows / tally.rows if tally.rows else 0.0,
        valid_rows=valid_rows,
        input_tokens=tally.input_tokens,
        output_tokens=tally.output_tokens,
        cost_usd=cost_usd(price_model, tally.input_tokens, tally.output_tokens),
        wall_s=round(wall_s, 3),
        reasons=tally.reasons,
    )
