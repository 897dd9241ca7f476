"""Settings of a generation run (``negforge generate`` and the pipeline's ``generate`` stage)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from negforge.cache_paths import cache_folder

#: ``--llm random``: the paper's random-sample baseline (no network, no LLM).
RANDOM_BACKEND = "random"
#: ``--llm local``: the llama.cpp server that ``negforge serve-local`` starts.
LOCAL_BACKEND = "local"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8765/v1"
LOCAL_URL_ENV = "NEGFORGE_LOCAL_LLM_URL"
LOCAL_MODEL_ENV = "NEGFORGE_LOCAL_LLM_MODEL"
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"
#: The LLM answer cache folder itself (the root of every cache is ``$NEGFORGE_CACHE_DIR``).
LLM_CACHE_DIR_ENV = "NEGFORGE_LLM_CACHE_DIR"

OnInvalid = Literal["drop", "random", "keep"]
OnFailed = Literal["error", "random", "drop"]
LocalFill = Literal["rank", "generate"]
ClientKind = Literal["auto", "openai", "litellm"]
ResponseFormatKind = Literal["auto", "json_schema", "json_object", "none"]
BatchRetry = Literal["batch", "online"]
#: The OpenAI Batch API's limits per batch input file: requests and bytes.
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024

# Settings that change what a run produces; the others (concurrency, limits, cache location,
# verbosity) only change how fast or how loudly it gets there.
_OUTPUT_SETTINGS = (
    "llm",
    "dict_sample",
    "seed",
    "temperature",
    "max_tokens",
    "max_attempts",
    "on_invalid",
    "allow_phrases",
    "require_dict_words",
    "prompt_template",
    "prompt_version",
    "response_format",
    "constrain_fills",
    "limit",
    "min_plausibility",
)
#: Output settings that only exist for ``llm: local`` (left out of other runs' provenance).
_LOCAL_OUTPUT_SETTINGS = ("local_fill", "local_model", "rank_candidates", "rank_top_k")
#: Defaults for ``llm: local`` (a small CPU model behind a one-slot llama.cpp server):
#: a shorter prompt, one request at a time, patient timeouts. Explicit settings win.
LOCAL_DEFAULTS: dict[str, Any] = {"dict_sample": 15, "concurrency": 1, "timeout_s": 600.0}
#: Queries in flight for ``llm: local`` with the rank fill (their decodes share batches).
RANK_CONCURRENCY = 16


def default_cache_dir() -> Path:
    """``$NEGFORGE_LLM_CACHE_DIR``, else ``$NEGFORGE_CACHE_DIR/generate`` (default
    ``~/.cache/negforge/generate``; see :mod:`negforge.cache_paths`)."""
    if os.environ.get(LLM_CACHE_DIR_ENV):
        return Path(os.environ[LLM_CACHE_DIR_ENV])
    return cache_folder("generate")


class GenerateConfig(BaseModel):
    """Every option of a generation run; unknown keys are rejected (typos in pipeline files)."""

    model_config = ConfigDict(extra="forbid")

    llm: str = Field(
        default=RANDOM_BACKEND,
        description="'random', 'local' or a litellm model string (gpt-3.5-turbo, "
        "gemini/gemini-1.5-flash, ollama/llama3, openai/<name> with api_base)",
        min_length=1,
    )
    api_base: str | None = Field(default=None, description="OpenAI-compatible server URL")
    client: ClientKind = Field(
        default="auto",
        description="auto: OpenAI-compatible backends use negforge's own chat-completions "
        "client (the OpenAI protocol over aiohttp), others litellm; 'openai': that client, "
        "refusing other backends; 'litellm' forces litellm for every backend",
    )
    dict_sample: int = Field(
        default=40, ge=1, description="dictionary words per type shown in a prompt (local: 15)"
    )
    seed: int = Field(default=0, description="seed of the random baseline and sampled prompts")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, allow_inf_nan=False,
                               description="sampling temperature of the LLM")  # fmt: skip
    max_tokens: int | None = Field(default=256, ge=1, description="answer token limit per call")
    max_attempts: int = Field(default=3, ge=1, description="calls per query incl. re-asks")
    on_invalid: OnInvalid = Field(
        default="random", description="what an invalid answer becomes after every re-ask"
    )
    max_failed: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="share of queries whose backend calls may fail (after every retry) "
        "before the run fails with exit code 3",
    )
    on_failed: OnFailed = Field(
        default="error",
        description="what the rows of a failed query become: error (no artifact when more "
        "than max_failed failed; within it, rows without a negative), random (a flagged "
        "random-baseline fill) or drop (no negative); failed queries are retried by a rerun",
    )
    allow_phrases: bool = Field(default=False, description="multi-word fills are valid")
    require_dict_words: bool = Field(
        default=False, description="every fill must be a dictionary word of its type"
    )
    concurrency: int = Field(
        default=16, ge=1, description="requests in flight (local: 16 rank fill, 1 generate)"
    )
    rpm: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="requests per minute"
    )
    tpm: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="tokens per minute"
    )
    timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False,
                             description="seconds per request (local: 600)")  # fmt: skip
    max_retries: int = Field(default=6, ge=0, description="retries per call on 429/5xx/...")
    max_backoff_s: float = Field(default=60.0, gt=0, allow_inf_nan=False,
                                 description="longest wait between retries")  # fmt: skip
    cache_dir: Path | None = Field(
        default=None, description="response cache (None: $NEGFORGE_LLM_CACHE_DIR, else "
        "$NEGFORGE_CACHE_DIR/generate, default ~/.cache/negforge/generate)"
    )
    no_cache: bool = Field(default=False, description="neither read nor write the cache")
    resume: bool = Field(default=True, description="reuse finished rows of an earlier run")
    dry_run: bool = Field(
        default=False, description="print calls, tokens and cost; spend nothing"
    )
    quiet: bool = Field(default=False, description="no progress bar")
    prompt_template: str = Field(default="negative_fill", description="prompt template id")
    prompt_version: int | None = Field(default=None, description="None: the newest version")
    response_format: ResponseFormatKind = Field(
        default="auto", description="structured output requested from the backend"
    )
    limit: int | None = Field(default=None, ge=1, description="only the first N queries")
    constrain_fills: bool | None = Field(
        default=None,
        description="grammar backends (llm=local): each fill must be one of the prompt's "
        "dictionary words of the mask's type; None: on for local, off elsewhere",
    )
    # The OpenAI Batch API (negforge.generation.batch_*): how requests travel, not what a run
    # produces, so none of these is an output setting.
    batch: bool = Field(default=False, description="send requests through the Batch API")
    batch_retry: BatchRetry = Field(
        default="batch",
        description="re-asks and failed requests: in a follow-up batch, or online",
    )
    batch_poll_s: float = Field(default=30.0, gt=0, description="first wait between polls")
    batch_max_poll_s: float = Field(default=300.0, gt=0, description="longest wait between polls")
    batch_max_requests: int = Field(default=BATCH_MAX_REQUESTS, ge=1, le=BATCH_MAX_REQUESTS,
                                    description="requests per batch input file")
    batch_max_bytes: int = Field(default=BATCH_MAX_BYTES, ge=1024, le=BATCH_MAX_BYTES,
                                 description="bytes per batch input file")
    batch_completion_window: str = Field(default="24h", description="the Batch API's window")

    local_fill: LocalFill = Field(
        default="rank",
        description="llm=local: 'rank' ranks dictionary words by the model's likelihood of "
        "the filled sentence (in process); 'generate' asks serve-local's chat model for free "
        "text through a grammar",
    )
    local_model: Path | None = Field(
        default=None, description="llm=local, rank fill: the GGUF file (None: SmolLM2)"
    )
    rank_candidates: int = Field(
        default=8, ge=1, description="rank fill: prefiltered candidates scored per mask"
    )
    rank_top_k: int = Field(default=3, ge=1, description="rank fill: sample among the k best")
    min_plausibility: float | None = Field(
        default=None,
        description="re-ask or flag negatives whose plausibility (-Delta NLL under the local "
        "model, nats/token) is below this; None: off",
    )

    @model_validator(mode="before")
    @classmethod
    def _local_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("llm") == LOCAL_BACKEND:
            defaults = dict(LOCAL_DEFAULTS)
            if data.get("local_fill") != "generate":
                defaults["concurrency"] = RANK_CONCURRENCY
            return {**defaults, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> GenerateConfig:
        if self.llm == RANDOM_BACKEND and self.api_base:
            raise ValueError("api_base makes no sense with llm=random")
        if self.batch and self.llm == RANDOM_BACKEND:
            raise ValueError("batch makes no sense with llm=random (nothing is sent)")
        if self.batch and self.rank_fill:
            raise ValueError("batch makes no sense with the rank fill (llm=local ranks words "
                             "in process; local_fill=generate goes through serve-local)")
        return self

    @property
    def fills_constrained(self) -> bool:
        """Whether grammar-capable backends get a per-mask word list in the schema."""
        if self.constrain_fills is None:
            return self.llm == LOCAL_BACKEND
        return self.constrain_fills

    @property
    def is_random(self) -> bool:
        return self.llm == RANDOM_BACKEND

    @property
    def rank_fill(self) -> bool:
        """``llm: local`` with the in-process rank fill (not serve-local's free generation)."""
        return self.llm == LOCAL_BACKEND and self.local_fill == "rank"

    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the output (stored in provenance, part of the run key)."""
        names: tuple[str, ...] = _OUTPUT_SETTINGS
        if self.llm == LOCAL_BACKEND:
            names = (*names, *_LOCAL_OUTPUT_SETTINGS)
        return {name: getattr(self, name) for name in names}
