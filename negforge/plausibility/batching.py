"""Many coroutines, one ``llama_decode``: a micro-batcher over :class:`LlamaLM`.

Concurrent fills (one coroutine per query) each await :meth:`DecodeBatcher.run` with a
*group*: decode requests that belong together (a shared prefix and the candidates that
continue it), numbered with local sequence ids 0..n-1. The batcher queues the groups; once
every coroutine that can run has queued its next group (the flush is scheduled with
``call_soon``, so it runs after the wake-ups of the previous flush), it packs groups in
arrival order into one decode of at most ``n_batch`` batch slots and ``n_seq_max - 1``
sequences, renumbers their sequence ids, decodes, and hands each group a copy of its
logits rows. Groups left over go into the next decode.

Because every decode starts from an empty cache and every group is laid out as one aligned
run (:mod:`negforge.plausibility.llama`), what a group gets does not depend on the other
groups of its batch: a query's fills are the same whichever queries run next to it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from negforge.plausibility.llama import (
    DecodeRequest,
    LlamaError,
    LlamaLM,
    batch_slots,
    run_lengths,
)

if TYPE_CHECKING:
    import numpy as np


@dataclass
class _Group:
    requests: list[DecodeRequest]
    sequences: int
    lengths: list[int]
    outputs: int
    future: asyncio.Future[np.ndarray]


class DecodeBatcher:
    """Batches the decode groups of concurrent coroutines (see the module docstring)."""

    def __init__(self, model: LlamaLM) -> None:
        self.model = model
        self._pending: deque[_Group] = deque()
        self._scheduled = False
        self.decodes = 0
        self.groups = 0

    def fits(self, tokens: int, sequences: int) -> bool:
        """Whether a group of ``tokens`` tokens and ``sequences`` sequences fits one decode."""
        return (batch_slots([tokens]) <= self.model.n_batch
                and sequences <= self.model.max_sequences)  # fmt: skip

    async def run(self, requests: Sequence[DecodeRequest], sequences: int) -> np.ndarray:
        """Decode a group (local sequence ids below ``sequences``); its logits rows.

        The group is laid out as one aligned run: its first request aligned, the others
        right after it, whatever their own ``align``.
        """
        requests = [replace(request, align=index == 0) for index, request in enumerate(requests)]
        lengths = run_lengths(requests)
        if not self.fits(lengths[0], sequences):
            raise LlamaError(
                f"a decode group of {batch_slots(lengths)} batch slots and {sequences} "
                f"sequences exceeds one batch ({self.model.n_batch} slots, "
                f"{self.model.max_sequences} sequences)"
            )
        loop = asyncio.get_running_loop()
        group = _Group(
            requests=list(requests),
            sequences=sequences,
            lengths=lengths,
            outputs=sum(sum(1 for flag in request.outputs if flag) for request in requests),
            future=loop.create_future(),
        )
        self._pending.append(group)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await group.future

    def _flush(self) -> None:
        self._scheduled = False
        chosen: list[_Group] = []
        lengths: list[int] = []
        sequences = 0
        while self._pending:
            group = self._pending[0]
            if group.future.cancelled():
                self._pending.popleft()
                continue
            if chosen and (
                batch_slots([*lengths, *group.lengths]) > self.model.n_batch
                or sequences + group.sequences > self.model.max_sequences
            ):
                break
            self._pending.popleft()
            chosen.append(group)
            lengths.extend(group.lengths)
            sequences += group.sequences
        if chosen:
            self._decode(chosen)
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _decode(self, groups: list[_Group]) -> None:
        requests: list[DecodeRequest] = []
        offset = 0
        for group in groups:
            for request in group.requests:
                ids = [offset + seq_id for seq_id in request.seq_ids]
                requests.append(replace(request, seq_ids=ids))
            offset += group.sequences
        try:
            rows = self.model.decode(requests)
        except Exception as exc:  # every group of the batch fails with it
            for group in groups:
                if not group.future.done():
                    group.future.set_exception(exc)
            return
        self.decodes += 1
        self.groups += len(groups)
        start = 0
        for group in groups:
            part = rows[start:start + group.outputs].copy()
            start += group.outputs
            if not group.future.done():
                group.future.set_result(part)
