"""Background jobs of the imports domain, run by ``carepost worker``.

``imports.run`` claims the oldest queued upload (or one whose worker died: its
lease expired) and imports it for up to :data:`RUN_BUDGET_SECONDS`, then lets
go, so one long import never starves the worker's other jobs; the next round
(of this worker or any other) goes on from the last committed batch.
"""

from __future__ import annotations

import os
import socket
import time

from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry, PeriodicJob
from carepost.imports import service, storage
from carepost.imports.runner import JobRunner

RUN_EVERY_SECONDS = 5.0
RUN_BUDGET_SECONDS = 60.0


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def run_imports(runtime: Runtime, *, budget_seconds: float = RUN_BUDGET_SECONDS) -> int:
    """Import for up to ``budget_seconds``; returns the rows read."""
    deadline = time.monotonic() + budget_seconds
    owner = worker_name()
    rows = 0
    with runtime.database.session() as session:
        service.purge_abandoned_uploads(session)
    while time.monotonic() < deadline:
        with runtime.database.session() as session:
            job = service.claim_job(session, owner)
            if job is None:
                return rows
            job_id, tenant_id = job.id, job.tenant_id
            keys = runtime.keyring.load(session, tenant_id)
        runner = JobRunner(runtime, keys, job_id, owner=owner)
        result = runner.run(storage.open_upload(runtime, keys, job_id), deadline=deadline)
        rows += result.rows
    return rows


def run_imports_job(runtime: Runtime) -> int:
    return run_imports(runtime)


def register_jobs(registry: JobRegistry) -> None:
    registry.add(
        PeriodicJob(
            "imports.run",
            RUN_EVERY_SECONDS,
            run_imports_job,
            "import uploaded CSV files into contacts, a batch per transaction",
        )
    )
