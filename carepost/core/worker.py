"""The background worker: periodic jobs registered by the domains, run by ``carepost worker``.

A job is a name, an interval and a function ``(runtime) -> int`` that does one
round of work and returns how many units it handled (rows purged, messages
claimed, chains anchored). Domains declare their jobs in their ``tasks.py``
(``register_jobs(registry)``); :mod:`carepost.jobs` gathers them all.

The loop runs every job when it starts, then each again once its interval has
passed since its previous run began. It writes one structured log line per run
(the job, the count, the duration; never a value), keeps going when a job fails,
and stops between two runs on SIGTERM or SIGINT: a job in progress always
finishes its transaction. Any number of workers may run against PostgreSQL, so
every job must be safe to run twice at once (set-based, idempotent, or claiming
rows with ``SKIP LOCKED``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from carepost.core.errors import CarepostError, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime

JobFunction = Callable[[Runtime], int]
Clock = Callable[[], float]

log = get_logger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """One kind of background work and how often to do it."""

    name: str
    every_seconds: float
    run: JobFunction
    description: str = ""


class JobRegistry:
    """The periodic jobs a worker runs, by name."""

    def __init__(self, jobs: Iterable[PeriodicJob] = ()) -> None:
        self._jobs: dict[str, PeriodicJob] = {}
        for job in jobs:
            self.add(job)

    def add(self, job: PeriodicJob) -> PeriodicJob:
        if job.name in self._jobs:
            raise ValueError(f"a job named {job.name!r} is already registered")
        if job.every_seconds <= 0:
            raise ValueError(f"job {job.name!r} needs a positive interval")
        self._jobs[job.name] = job
        return job

    def register(
        self, name: str, *, every_seconds: float, description: str = ""
    ) -> Callable[[JobFunction], JobFunction]:
        """Decorator form of :meth:`add`: ``@registry.register("x.y", every_seconds=60)``."""

        def decorate(function: JobFunction) -> JobFunction:
            self.add(PeriodicJob(name, every_seconds, function, description))
            return function

        return decorate

    def only(self, names: Iterable[str]) -> JobRegistry:
        """A registry holding just the named jobs; an unknown name is a clear error."""
        wanted = list(names)
        unknown = sorted(set(wanted) - set(self._jobs))
        if unknown:
            raise ValidationFailed(
                f"no job named {unknown[0]!r}; known jobs: {', '.join(sorted(self._jobs))}",
                field="job",
            )
        return JobRegistry(self._jobs[name] for name in wanted)

    def __iter__(self) -> Iterator[PeriodicJob]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs


@dataclass
class JobOutcome:
    """What one run of one job did."""

    job: str
    count: int = 0
    failed: bool = False
    duration_ms: float = 0.0


@dataclass
class RoundReport:
    """What one pass over the due jobs did (``carepost worker --once`` prints it)."""

    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [outcome.job for outcome in self.outcomes if outcome.failed]


def _error_summary(exc: BaseException) -> str:
    # CarepostError messages are written never to carry PHI; other messages (driver
    # errors, say) might quote data, so only their type is logged.
    if isinstance(exc, CarepostError):
        return f"{type(exc).__name__}: {exc.detail}"
    return type(exc).__name__


class Worker:
    """Runs a registry's jobs on their intervals until asked to stop."""

    def __init__(
        self,
        runtime: Runtime,
        registry: JobRegistry,
        *,
        max_sleep_seconds: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.max_sleep_seconds = (
            max_sleep_seconds
            if max_sleep_seconds is not None
            else runtime.settings.worker_poll_seconds
        )
        self._clock = clock
        self._stop = threading.Event()
        self._next_due: dict[str, float] = {}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the loop to end after the job in progress (safe from any thread)."""
        self._stop.set()

    def run_job(self, job: PeriodicJob) -> JobOutcome:
        started = self._clock()
        outcome = JobOutcome(job.name)
        try:
            outcome.count = int(job.run(self.runtime))
        except Exception as exc:  # noqa: BLE001 - one failing job must not stop the others
            outcome.failed = True
            outcome.duration_ms = round((self._clock() - started) * 1000, 1)
            log.error(
                "worker.job_failed",
                job=job.name,
                error=_error_summary(exc),
                duration_ms=outcome.duration_ms,
            )
            return outcome
        outcome.duration_ms = round((self._clock() - started) * 1000, 1)
        log.info("worker.job", job=job.name, count=outcome.count, duration_ms=outcome.duration_ms)
        return outcome

    def run_due(self) -> RoundReport:
        """Run every job whose time has come (all of them on the first call)."""
        report = RoundReport()
        for job in self.registry:
            if self._stop.is_set():
                break
            now = self._clock()
            if self._next_due.get(job.name, now) > now:
                continue
            # The interval counts from the start of a run, so a slow job does not drift.
            self._next_due[job.name] = now + job.every_seconds
            report.outcomes.append(self.run_job(job))
        return report

    def seconds_until_next_job(self) -> float:
        now = self._clock()
        waits = [self._next_due.get(job.name, now) - now for job in self.registry]
        return max(0.0, min([*waits, self.max_sleep_seconds]))

    def run(self, *, once: bool = False) -> RoundReport:
        """Run jobs until :meth:`stop` (or a signal), or one round with ``once``.

        Returns the report of the last round.
        """
        log.info("worker.started", count=len(self.registry), once=once)
        report = RoundReport()
        with self._stop_on_signals():
            while not self._stop.is_set():
                report = self.run_due()
                if once:
                    break
                self._stop.wait(self.seconds_until_next_job())
        log.info("worker.stopped", count=len(report.outcomes))
        return report

    def _stop_on_signals(self) -> _SignalHandlers:
        return _SignalHandlers(self)


class _SignalHandlers:
    """Turns SIGTERM/SIGINT into a graceful stop while the loop runs (main thread only).

    A second signal restores the default behaviour, so an impatient Ctrl-C twice
    still ends a worker stuck in a long job.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("worker.stopping", signal=signal.Signals(signum).name)
        self.worker.stop()
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> _SignalHandlers:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._restore()
