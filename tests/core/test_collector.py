"""The garbage-collector pauses are counted: overlapping users (API threads, an
import beside a batch) leave the collector as the first one found it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from carepost.core.collector import collections_spaced, collector_paused


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def test_a_pause_disables_and_restores() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_restore_only_at_the_last_exit() -> None:
    gc.enable()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to enter leaves first
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_keeps_a_collector_that_was_off_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_spacing_overlaps_in_threads_and_restores_the_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    inside = threading.Barrier(4)
    leave = threading.Event()

    def importing(threshold: int) -> None:
        with collections_spaced(threshold):
            inside.wait()
            leave.wait()

    threads = [
        threading.Thread(target=importing, args=(n,), daemon=True) for n in (5_000, 50_000, 500)
    ]
    for thread in threads:
        thread.start()
    inside.wait()
    try:
        assert gc.get_threshold() == (50_000, 10, 10)  # the widest spacing asked for
    finally:
        leave.set()
    for thread in threads:
        thread.join()
    assert gc.get_threshold() == (700, 10, 10)


def test_spacing_never_lowers_a_higher_threshold() -> None:
    gc.set_threshold(200_000, 10, 10)
    with collections_spaced(1_000):
        assert gc.get_threshold()[0] == 200_000
    assert gc.get_threshold() == (200_000, 10, 10)
