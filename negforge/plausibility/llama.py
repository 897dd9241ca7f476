"""llama.cpp in process: a GGUF causal LM that decodes many sequences per batch.

:class:`LlamaLM` wraps llama-cpp-python's low-level C API (``llama_cpp.llama_*``): one model,
one context with a unified KV cache, and one reusable ``llama_batch`` of ``n_batch`` tokens
for up to ``n_seq_max`` sequences. :meth:`LlamaLM.decode` takes several
:class:`DecodeRequest` (sequence ids, tokens, their first position, which of them need
logits) and runs them as one ``llama_decode`` on an empty cache. Both the plausibility
scorer and the rank fill of ``generate --llm local`` sit on it.

Numerics: what a sequence gets never depends on what else shares its batch. The Q4 model
quantises activations to 8 bits before every matrix product, so the smallest change in the
order of a floating-point sum (another kernel, another SIMD lane) flips roundings that
add up to several hundredths of a nat per token (measured with SmolLM2). Three rules make
each sequence's arithmetic the same in every batch:

* every decode starts from an empty KV cache, so cell i holds batch token i;
* every sequence (or run of sequences laid out together, :class:`DecodeRequest`) starts at
  a batch index divisible by :data:`ALIGN` (8, the AVX2 lane count; attention sums over the
  cells lane by lane, and a sequence starting at another offset puts its cells in other
  lanes), the gaps filled with a throw-away sequence;
* every decode holds at least :data:`MIN_BATCH_TOKENS` (64) tokens and at most ``n_batch``
  (= ``n_ubatch``, so llama.cpp never splits it); flash attention stays off (its kernels
  depend on the batch size). The minimum is a guard against ggml choosing other matrix
  kernels for small batches: for SmolLM2's Q4_1 weights on this build it changes nothing
  (``benchmarks/bench_plausibility.py``: a sentence decoded alone in 8-20 tokens scores
  bit-identically), while a start off the 8-token grid changes NLLs by up to 0.022.

``tests/generation/test_plausibility.py`` checks that a text scores bit-identically alone and in any
batch. The price is the padding: about a third more tokens for ten-token queries.

Tokens shared by several sequences (a common prefix) are decoded once, tagged with every
sequence id, and attended to by each of them.

The first token of a text is predicted from the model's document-start token: BOS when the
vocabulary adds one, else its end-of-text token (SmolLM2: ``<|endoftext|>``, the separator
of its pre-training documents).

``llama_cpp`` is imported when a model is loaded, never at module import time.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from negforge.errors import MissingModelError, NegforgeError
from negforge.generation.local_server import LLAMA_SERVER_REQUIREMENT, find_gguf

if TYPE_CHECKING:
    import numpy as np

#: Every decode holds at least this many tokens (see the module docstring).
MIN_BATCH_TOKENS = 64
#: Every sequence starts at a batch index divisible by this (see the module docstring).
ALIGN = 8


class LlamaError(NegforgeError):
    """llama.cpp refused a decode (context full, bad batch) or failed to load a model."""


class LlamaSettings(BaseModel):
    """How to run the in-process model."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = Field(default=None, description="GGUF file; None: SmolLM2")
    n_ctx: int = Field(default=512, ge=MIN_BATCH_TOKENS, description="KV cells (>= n_batch)")
    n_batch: int = Field(default=512, ge=MIN_BATCH_TOKENS, description="tokens per decode")
    n_seq_max: int = Field(default=64, ge=2, le=256, description="sequences per decode")
    threads: int | None = Field(default=None, ge=1, description="None: all cores, at most 8")


@dataclass
class DecodeRequest:
    """Tokens of one or more sequences; ``outputs[i]``: whether token i needs logits.

    ``seq_ids`` holds several ids for a prefix that several sequences share; the requests of
    those sequences then continue it (``start`` = the prefix length). ``align``: the request
    starts at an aligned batch index; requests that follow it unaligned form one *run* whose
    layout is fixed by the run alone (the rank fill aligns each query's group of a shared
    prefix and its candidates, not every candidate).
    """

    seq_ids: Sequence[int]
    tokens: Sequence[int]
    start: int  # position of tokens[0] in its sequence(s)
    outputs: Sequence[bool]
    align: bool = True


def aligned(length: int) -> int:
    """Batch slots a run of ``length`` tokens takes (its start is aligned)."""
    return -(-length // ALIGN) * ALIGN


def batch_slots(runs: Sequence[int]) -> int:
    """Batch slots a decode of runs of these lengths takes, padding included."""
    return max(MIN_BATCH_TOKENS, sum(aligned(length) for length in runs))


def run_lengths(requests: Sequence[DecodeRequest]) -> list[int]:
    """The lengths of the aligned runs of a list of requests."""
    runs: list[int] = []
    for request in requests:
        if request.align or not runs:
            runs.append(0)
        runs[-1] += len(request.tokens)
    return runs


def _quiet_logging(llama: Any) -> None:
    """Route llama.cpp's log lines to nowhere (kept alive: the C side holds the pointer)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama.llama_log_callback(lambda *_: None)
        llama.llama_log_set(_LOG_CALLBACK, None)


_LOG_CALLBACK: Any = None


def import_llama(verbose: bool = False) -> Any:
    """``llama_cpp``, or :class:`MissingModelError` naming the package to install."""
    # llama.cpp's OpenMP threads spin while they wait; on a busy machine a descheduled one
    # stalls the others (docs/local_llm.md). libgomp reads this when it is loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingModelError(
            f"llama.cpp's Python bindings are not installed; install them with "
            f"`pip install '{LLAMA_SERVER_REQUIREMENT}'` (or `pip install -r "
            f"requirements/llama.txt`; it compiles llama.cpp, ~5 minutes)"
        ) from exc
    if not verbose:
        _quiet_logging(llama_cpp)
    return llama_cpp


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(path: Path) -> str:
    """sha256 of a GGUF file (memoised per path, size and modification time)."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def default_threads() -> int:
    """All cores this process may use, at most 8 (more rarely helps a 135M model)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class LlamaLM:
    """A GGUF causal LM in this process (see the module docstring)."""

    def __init__(self, settings: LlamaSettings | None = None, *, verbose: bool = False,
                 **overrides: Any) -> None:  # fmt: skip
        base = settings or LlamaSettings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        if self.settings.n_batch > self.settings.n_ctx:
            raise LlamaError(f"n_batch {self.settings.n_batch} > n_ctx {self.settings.n_ctx}")
        self.path = find_gguf(self.settings.model_path)
        self._llama = import_llama(verbose)
        llama = self._llama
        llama.llama_backend_init()
        self._model = llama.llama_model_load_from_file(
            str(self.path).encode(), llama.llama_model_default_params()
        )
        if not self._model:
            raise LlamaError(f"llama.cpp could not load the model {self.path}")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self._vocab))
        params = llama.llama_context_default_params()
        params.n_ctx = self.settings.n_ctx
        params.n_batch = params.n_ubatch = self.settings.n_batch
        params.n_seq_max = self.settings.n_seq_max
        threads = self.settings.threads or default_threads()
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # one cell range for all sequences: cell i = batch token i
        params.flash_attn_type = 0  # off: its kernels depend on the batch size (measured)
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama.llama_model_free(self._model)
            raise LlamaError(f"llama.cpp could not create a context for {self.path}")
        self._memory = llama.llama_get_memory(self._ctx)
        self._batch = llama.llama_batch_init(self.settings.n_batch, 0, self.settings.n_seq_max)
        self.threads = threads
        self.pad_seq = self.settings.n_seq_max - 1  # reserved for the padding sequence
        if llama.llama_vocab_get_add_bos(self._vocab) or llama.llama_vocab_eot(self._vocab) < 0:
            self.start_token = int(llama.llama_vocab_bos(self._vocab))
        else:
            self.start_token = int(llama.llama_vocab_eot(self._vocab))
        self.decode_calls = 0
        self.tokens_decoded = 0  # real tokens (padding not counted)
        self.padding_tokens = 0
        self._closed = False

    # -- identity -------------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        return model_sha256(self.path)

    @property
    def max_sequences(self) -> int:
        """Sequence ids 0 .. max_sequences-1 are free for callers (the last one pads)."""
        return self.settings.n_seq_max - 1

    @property
    def n_batch(self) -> int:
        return self.settings.n_batch

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start token, special-token text kept as plain text)."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buffer = (self._llama.llama_token * capacity)()
        count = self._llama.llama_tokenize(self._vocab, data, len(data), buffer, capacity,
                                           False, False)  # fmt: skip
        if count < 0:
            raise LlamaError(f"tokenizing {text[:40]!r} needs {-count} tokens")
        return list(buffer[:count])

    def piece(self, token: int) -> str:
        """The text of one token."""
        buffer = ctypes.create_string_buffer(64)
        count = self._llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
        return buffer.raw[: max(count, 0)].decode("utf-8", errors="replace")

    # -- decoding -------------------------------------------------------------------------

    def decode(self, requests: Sequence[DecodeRequest]) -> np.ndarray:
        """Run the requests as one batch on an empty cache; the logits of the marked tokens.

        The result has one row of ``n_vocab`` logits per marked token, request by request;
        it is a view into llama.cpp's buffer, valid until the next decode.
        """
        import numpy as np

        slots = batch_slots(run_lengths(requests))
        if slots > self.settings.n_batch:
            raise LlamaError(f"a decode of {slots} batch slots exceeds n_batch "
                             f"{self.settings.n_batch}")  # fmt: skip
        self._llama.llama_memory_clear(self._memory, True)
        batch = self._batch
        token, pos, n_seq, seq, want = (batch.token, batch.pos, batch.n_seq_id, batch.seq_id,
                                        batch.logits)  # fmt: skip
        index = outputs = padding = 0
        pad_seq, start_token = self.pad_seq, self.start_token

        def pad(count: int) -> None:
            nonlocal index, padding
            for _ in range(count):
                token[index] = start_token
                pos[index] = padding
                n_seq[index] = 1
                seq[index][0] = pad_seq
                want[index] = 0
                index += 1
                padding += 1

        real = 0
        for request in requests:
            if request.align:
                pad(-index % ALIGN)
            start, ids = request.start, list(request.seq_ids)
            if not ids or len(ids) > self.settings.n_seq_max or pad_seq in ids:
                raise LlamaError(f"bad sequence ids {ids} (at most {self.max_sequences})")
            for offset, (tok, flag) in enumerate(zip(request.tokens, request.outputs,
                                                     strict=True)):  # fmt: skip
                token[index] = tok
                pos[index] = start + offset
                n_seq[index] = len(ids)
                for slot, seq_id in enumerate(ids):
                    seq[index][slot] = seq_id
                want[index] = flag
                outputs += bool(flag)
                index += 1
            real += len(request.tokens)
        pad(max(0, MIN_BATCH_TOKENS - index))
        batch.n_tokens = index
        code = self._llama.llama_decode(self._ctx, batch)
        if code != 0:
            reason = "no free KV cells (raise n_ctx)" if code == 1 else f"code {code}"
            raise LlamaError(f"llama_decode failed: {reason}")
        self.decode_calls += 1
        self.tokens_decoded += real
        self.padding_tokens += padding
        if not outputs:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        pointer = self._llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(outputs, self.n_vocab))

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Free the batch, the context and the model."""
        if self._closed:
            return
        self._closed = True
        self._llama.llama_batch_free(self._batch)
        self._llama.llama_free(self._ctx)
        self._llama.llama_model_free(self._model)

    def __enter__(self) -> LlamaLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def log_softmax_at(logits: np.ndarray, targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """``log p(targets[i])`` under the softmax of row i of ``logits`` (float64)."""
    import numpy as np

    rows = np.asarray(logits, dtype=np.float32)
    count = rows.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    peak = rows.max(axis=1)
    work = np.subtract(rows, peak[:, None])
    np.exp(work, out=work)
    log_total = np.log(work.sum(axis=1, dtype=np.float64)) + peak
    picked = rows[np.arange(count), np.asarray(targets, dtype=np.int64)]
    return np.asarray(picked, dtype=np.float64) - log_total


def log_softmax_row(row: np.ndarray) -> np.ndarray:
    """The whole log-softmax of one logits row (float64)."""
    import numpy as np

    values = np.asarray(row, dtype=np.float64)
    peak = values.max()
    return values - (np.log(np.exp(values - peak).sum()) + peak)
