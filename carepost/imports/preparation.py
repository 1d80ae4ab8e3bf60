"""Checking and sealing an import's next batch while the current one is written.

Checking and normalizing contacts (:func:`carepost.contacts.prepare.prepare_batch`:
email and phone forms, dates, choices) needs no database, and neither does sealing
them as new contacts (:func:`carepost.contacts.sealing.seal_batch`: AES-GCM
ciphertexts of the PHI columns, blind indexes, segmentation tokens); together they
cost more CPU than the write itself. A :class:`BatchPreparer` runs both in worker
processes, so on a machine with two cores one batch is prepared while the previous
one is written; the runner commits the batches in file order, one transaction each,
exactly as before (a crash still loses at most the batch in flight).

The workers receive the plaintext items of the file (PHI) and the tenant's active
data key and index key (:class:`carepost.contacts.sealing.KeyMaterial`) over a local
pipe, and send back the checked contacts and their ciphertexts and tokens; they write
nothing, log no value and hold the keys only in memory, like the importing process.
The first batch is prepared in the importing process itself, so a small file never
starts a worker; a worker that dies (out of memory, killed) makes the preparer work
in-process from then on; and workers end when the importing process dies (a crash,
``kill -9``).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from carepost.contacts.prepare import PreparationContext, PreparedBatch, prepare_batch
from carepost.contacts.sealing import KeyMaterial, SealedBatch, seal_batch
from carepost.core.collector import collections_spaced
from carepost.core.logging import get_logger

log = get_logger(__name__)


PARENT_CHECK_SECONDS = 1.0
# Allocations between two young-generation collections while importing (Python's
# default is 700). A batch allocates millions of objects that live until the batch is
# written, nearly all without cycles: at the default every few thousand allocations
# start a collection that walks them, and the older generations' collections walk
# every batch in memory, about a fifth of the import's CPU in a profile.
IMPORT_GC_THRESHOLD = 100_000


def batch_sized_gc() -> AbstractContextManager[None]:
    """Collect cyclic garbage less often while importing (reference counting still
    frees everything else at once); the thresholds come back after the last import."""
    return collections_spaced(IMPORT_GC_THRESHOLD)


Prepared = tuple[PreparedBatch, SealedBatch]


def prepare_and_seal(
    items: Sequence[Mapping[str, Any]],
    context: PreparationContext,
    material: KeyMaterial,
    *,
    now: datetime,
) -> Prepared:
    """Check a batch, then seal its contacts as new ones (in a worker or in-process)."""
    batch = prepare_batch(items, context, now=now)
    return batch, seal_batch(batch, material.keys())


def _exit_with_parent(parent: int) -> None:
    """Run in each worker: end it once the importing process is gone (killed with
    ``kill -9``, say), instead of leaving it waiting for batches forever. A worker
    only prepares batches: it collects garbage as :func:`batch_sized_gc` does."""
    gc.set_threshold(IMPORT_GC_THRESHOLD, *gc.get_threshold()[1:])

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class BatchPreparer:
    """Prepares batches ahead of their write in up to ``processes`` worker processes."""

    def __init__(self, processes: int, material: KeyMaterial) -> None:
        self.processes = processes
        self.material = material
        self._submitted = 0
        self._pool: ProcessPoolExecutor | None = None

    def submit(
        self, items: Sequence[Mapping[str, Any]], context: PreparationContext, *, now: datetime
    ) -> Future[Prepared]:
        """Start preparing ``items``; the future's result is what
        :func:`prepare_and_seal` returns."""
        self._submitted += 1
        if self.processes > 0 and self._submitted > 1:
            try:
                return self._workers().submit(
                    prepare_and_seal, list(items), context, self.material, now=now
                )
            except BrokenProcessPool:
                self._give_up_workers()
        done: Future[Prepared] = Future()
        done.set_result(prepare_and_seal(items, context, self.material, now=now))
        return done

    def result(
        self,
        future: Future[Prepared],
        items: Sequence[Mapping[str, Any]],
        context: PreparationContext,
        *,
        now: datetime,
    ) -> Prepared:
        """The prepared batch; prepared here if its worker died."""
        try:
            return future.result()
        except BrokenProcessPool:
            self._give_up_workers()
            return prepare_and_seal(items, context, self.material, now=now)

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: a forked child would share the parent's database
            # connections and logging handlers; a fresh interpreter holds nothing.
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _give_up_workers(self) -> None:
        log.warning("import.prepare_workers_lost")
        self.processes = 0
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
