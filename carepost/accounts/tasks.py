"""Background jobs of the accounts domain, run by ``carepost worker``."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from carepost.accounts.models import UserSession
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry, PeriodicJob

# Ended sessions stay listed this long (for "where am I signed in" and support
# questions); sign-ins themselves are kept in the audit trail for its own period.
ENDED_SESSION_RETENTION = timedelta(days=7)
PURGE_EVERY_SECONDS = 3600.0


def purge_ended_sessions(session: Session, *, older_than: timedelta) -> int:
    """Delete console sessions that expired or were revoked more than ``older_than`` ago.

    Idle-timed-out sessions that nobody touched again are covered too: their
    absolute expiry is never more than the tenant's maximum lifetime away.
    """
    cutoff = utcnow() - older_than
    result = session.execute(
        delete(UserSession).where(
            or_(UserSession.revoked_at < cutoff, UserSession.expires_at < cutoff)
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def purge_ended_sessions_job(runtime: Runtime) -> int:
    with runtime.database.session() as session:
        return purge_ended_sessions(session, older_than=ENDED_SESSION_RETENTION)


def register_jobs(registry: JobRegistry) -> None:
    registry.add(
        PeriodicJob(
            "accounts.purge_sessions",
            PURGE_EVERY_SECONDS,
            purge_ended_sessions_job,
            "delete console sessions that ended more than 7 days ago",
        )
    )
