"""Checking an import's next batch while the current one is written.

Checking and normalizing contacts (:func:`carepost.contacts.prepare.prepare_batch`:
email and phone forms, dates, choices) needs neither the database nor the keys, and
costs about as much CPU as the write itself. A :class:`BatchPreparer` runs it in
worker processes, so on a machine with two cores one batch is checked while the
previous one is encrypted and written; the runner commits the batches in file order,
one transaction each, exactly as before (a crash still loses at most the batch in
flight).

The workers receive the plaintext items of the file (PHI) over a local pipe and send
the checked contacts back; they hold no keys and write nothing. The first batch is
checked in the importing process itself, so a small file never starts a worker; a
worker that dies (out of memory, killed) makes the preparer check in-process from
then on; and workers end when the importing process dies (a crash, ``kill -9``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from carepost.contacts.prepare import PreparationContext, PreparedBatch, prepare_batch
from carepost.core.logging import get_logger

log = get_logger(__name__)


PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """Run in each worker: end it once the importing process is gone (killed with
    ``kill -9``, say), instead of leaving it waiting for batches forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class BatchPreparer:
    """Prepares batches ahead of their write in up to ``processes`` worker processes."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._submitted = 0
        self._pool: ProcessPoolExecutor | None = None

    def submit(
        self, items: Sequence[Mapping[str, Any]], context: PreparationContext, *, now: datetime
    ) -> Future[PreparedBatch]:
        """Start checking ``items``; the future's result is what :func:`prepare_batch` returns."""
        self._submitted += 1
        if self.processes > 0 and self._submitted > 1:
            try:
                return self._workers().submit(prepare_batch, list(items), context, now=now)
            except BrokenProcessPool:
                self._give_up_workers()
        done: Future[PreparedBatch] = Future()
        done.set_result(prepare_batch(items, context, now=now))
        return done

    def result(
        self,
        future: Future[PreparedBatch],
        items: Sequence[Mapping[str, Any]],
        context: PreparationContext,
        *,
        now: datetime,
    ) -> PreparedBatch:
        """The checked batch; checked here if its worker died."""
        try:
            return future.result()
        except BrokenProcessPool:
            self._give_up_workers()
            return prepare_batch(items, context, now=now)

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
