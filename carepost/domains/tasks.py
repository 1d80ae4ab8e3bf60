"""Background jobs of the sending domains, run by ``carepost worker``."""

from __future__ import annotations

from datetime import timedelta

from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry, PeriodicJob
from carepost.domains import service

PROMOTE_EVERY_SECONDS = 3600.0


def promote_due_keys_job(runtime: Runtime) -> int:
    """Rotated DKIM keys start signing once they have been published long enough."""
    delay = timedelta(hours=runtime.settings.domains_key_promotion_hours)
    with runtime.database.session() as session:
        return service.promote_due_keys(session, now=utcnow(), delay=delay)


def register_jobs(registry: JobRegistry) -> None:
    registry.add(
        PeriodicJob(
            "domains.promote_keys",
            PROMOTE_EVERY_SECONDS,
            promote_due_keys_job,
            "promote rotated DKIM keys whose publication delay has passed",
        )
    )
