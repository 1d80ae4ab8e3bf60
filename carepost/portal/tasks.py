"""The portal's job for ``carepost worker``: purge the content of expired items."""

from __future__ import annotations

from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry
from carepost.portal.service import expire_due


def expire_portal_items(runtime: Runtime) -> int:
    total = 0
    while True:
        with runtime.database.session() as session:
            done = expire_due(session, now=utcnow(), limit=500)
        total += done
        if done < 500:
            return total


def register_jobs(registry: JobRegistry) -> None:
    registry.register(
        "portal.expire",
        every_seconds=300,
        description="Delete the content of secure portal messages past their expiry",
    )(expire_portal_items)
