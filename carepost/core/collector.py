"""Holding off Python's cyclic garbage collector around bulk work.

Bulk paths (a batch of 10,000 messages, an import batch, a campaign chunk) make
hundreds of thousands of objects that all live until the batch is written. Each
allocation past the young generation's threshold starts a collection that walks
them again; in profiles that was a fifth to a third of the CPU. What a batch makes
is freed by reference counting; the rare cycle is collected after the batch.

Both helpers change process-wide state, and API requests run in threads, so they
are counted under one lock: the first entry changes the collector, the last exit
restores what the first one found, whatever the order the threads leave in.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_pauses = 0
_was_enabled = False
_spacings: list[int] = []  # the thresholds asked for by the blocks running now
_thresholds_before: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection at all while the block runs (for work that ends in
    seconds: a batch of messages, a campaign chunk)."""
    global _pauses, _was_enabled
    with _LOCK:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _LOCK:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


@contextmanager
def collections_spaced(threshold: int) -> Iterator[None]:
    """Young-generation collections only every ``threshold`` allocations (or more
    seldom, when an overlapping user asked for more) while the block runs: for long
    work such as an import, where a full pause could let cycles pile up. The
    thresholds found by the first entry come back at the last exit."""
    global _thresholds_before
    with _LOCK:
        if not _spacings:
            _thresholds_before = gc.get_threshold()
        _spacings.append(threshold)
        _apply_spacing()
    try:
        yield
    finally:
        with _LOCK:
            _spacings.remove(threshold)
            if _spacings:
                _apply_spacing()
            else:
                gc.set_threshold(*_thresholds_before)


def _apply_spacing() -> None:
    first, *older = _thresholds_before
    gc.set_threshold(max(first, *_spacings), *older)
