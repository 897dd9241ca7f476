"""The cyclic garbage collector around negforge's two kinds of heavy work.

* Batch work that builds large acyclic data (parsing, masking, reading an artifact into
  rows): :func:`gc_paused` turns the collector off, as its passes over every live object
  cost about as much as the work itself.
* A long event-loop run over a large heap that stays alive (generation: the dictionary, the
  queries' index, every imported module): :func:`inputs_frozen` moves the objects alive at
  its start out of the collector's reach (``gc.freeze``) and collects the youngest
  generation less often. On 8,281 Charades-CG queries ``generate`` takes 15.1 s with it and
  16.9 s without (best of 3 each, ``benchmarks/bench_generate.py``'s setting).

Reference counting frees everything as usual in both; only cycles wait longer.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Allocations between two collections of the youngest generation in :func:`inputs_frozen`
#: (CPython's default is 700; a generation request allocates a few hundred objects).
YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around allocation-heavy batch work."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_frozen_depth = 0  # inputs_frozen() nests: only the outermost one freezes and restores


@contextlib.contextmanager
def inputs_frozen(young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Keep the objects alive now out of every collection, and collect the young less often,
    until exit (then both are restored)."""
    global _frozen_depth
    if _frozen_depth:
        _frozen_depth += 1
        try:
            yield
        finally:
            _frozen_depth -= 1
        return
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young_threshold, thresholds[0]), *thresholds[1:])
    _frozen_depth = 1
    try:
        yield
    finally:
        _frozen_depth = 0
        gc.set_threshold(*thresholds)
        gc.unfreeze()
