"""Importing a file the importing process can read itself (the command line).

No upload chunks: the runner reads the file where it lies, from the job's
position, so ``carepost contacts import --resume JOB`` goes on after a crash.
The job row is the same as an upload's (``source="local"``), so its progress,
counts and error report are read the same way; workers never claim it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carepost.audit.service import Actor
from carepost.core.database import utcnow
from carepost.core.errors import Conflict
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.imports import service
from carepost.imports.runner import JobRunner, Progress, RunResult, check_file_start
from carepost.imports.storage import CHUNK_BYTES

LOCAL_OWNER = f"cli:{socket.gethostname()[:40]}:{os.getpid()}"


def _gone(owner: str) -> bool:
    """A command line of this machine that is no longer running (it crashed)."""
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind != "cli" or host != socket.gethostname()[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def start_local_import(
    runtime: Runtime,
    keys: TenantKeys,
    path: Path,
    *,
    format: str,
    mapping: dict[str, Any],
    match: str,
    actor: Actor,
) -> uuid.UUID:
    """A queued job for ``path``, leased to this process."""
    with runtime.bound_session(keys) as session:
        job = service.create_job(
            session,
            keys.tenant_id,
            format=format,
            mapping=mapping,
            match=match,
            actor=actor,
            source="local",
            file_size=path.stat().st_size,
        )
        # A header that does not fit the mapping is refused now, with its pointers,
        # rather than failing the job a moment later.
        with path.open("rb") as stream:
            check_file_start(session, job, stream.read(CHUNK_BYTES))
        service.record_created(session, job, actor)
        service.take_lease(job, LOCAL_OWNER, utcnow())
        return job.id


def resume_local_import(runtime: Runtime, keys: TenantKeys, job_id: uuid.UUID, path: Path) -> None:
    """Lease a command-line job again, after checking the file is still the same size."""
    with runtime.bound_session(keys) as session:
        job = service.claim_local_job(session, keys.tenant_id, job_id, LOCAL_OWNER, is_dead=_gone)
        if path.stat().st_size != job.file_size:
            raise Conflict(
                "this file is not the one the job started with (its size differs)", field="file"
            )


def run_local_import(
    runtime: Runtime,
    keys: TenantKeys,
    job_id: uuid.UUID,
    path: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    max_batches: int | None = None,
    batch_rows: int | None = None,
) -> RunResult:
    runner = JobRunner(runtime, keys, job_id, owner=LOCAL_OWNER, progress=progress)
    if batch_rows is not None:
        runner.batch_rows = batch_rows
    return runner.run(path.open("rb"), max_batches=max_batches)
