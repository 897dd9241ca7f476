"""The collector settings restore what they change, and nest."""

from __future__ import annotations

import gc

from negforge.gc_settings import YOUNG_THRESHOLD, gc_paused, inputs_frozen


def test_inputs_frozen_freezes_live_objects_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    kept = [[index] for index in range(1000)]  # alive when the run starts: frozen
    with inputs_frozen():
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        with inputs_frozen():  # nested: the outer one keeps its settings
            pass
        assert gc.get_freeze_count() >= len(kept)
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle made during the run is still collected
        del garbage
        assert gc.collect() >= 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_gc_paused_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    try:
        with gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.isenabled()
