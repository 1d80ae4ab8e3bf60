"""Import jobs for console tests: an upload held for its mapping (the wizard's step 2),
and running the queued jobs as ``carepost worker`` would."""

from __future__ import annotations

import uuid

from carepost.audit.service import SYSTEM
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.imports import service
from carepost.imports.storage import ChunkWriter
from carepost.imports.tasks import run_imports
from carepost.tenancy.models import Tenant


def held_upload(runtime: Runtime, tenant: tuple[Tenant, TenantKeys], body: bytes) -> uuid.UUID:
    """A stored upload whose columns are not mapped yet."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        job = service.create_job(
            session, tenant_row.id, format="csv", mapping={}, match="email", actor=SYSTEM
        )
        job_id = job.id
    writer = ChunkWriter(runtime, keys, job_id)
    writer.write(body)
    writer.close()
    with runtime.bound_session(keys) as session:
        service.hold_upload(
            session, service.get_job(session, tenant_row.id, job_id), file_size=len(body)
        )
    return job_id


def run_worker(runtime: Runtime) -> int:
    """What ``carepost worker``'s ``imports.run`` job does, once."""
    return run_imports(runtime, budget_seconds=30)
