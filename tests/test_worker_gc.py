"""A worker's GC settings: start-up objects frozen, garbage made afterwards still collected."""
from __future__ import annotations

import gc
import weakref

from streams.worker import settle_gc


class _Node:
    ref: object = None


def test_settle_gc_freezes_what_exists_and_still_collects_new_cycles() -> None:
    threshold = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 10_000
        # The frozen start-up objects are not garbage; a cycle made after start-up still is.
        cycle = _Node()
        cycle.ref = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
