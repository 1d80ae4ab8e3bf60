"""Where the console's audit trail browser reads events from.

A stand-in until ``carepost.audit.query`` lands: one function over
:class:`~carepost.audit.models.AuditEvent`, always scoped by tenant, newest first,
paged by a cursor (the chain sequence number, which orders a tenant's events). The
browser depends only on :class:`AuditFilter`, :class:`AuditPage` and
:func:`find_audit_events`, so swapping in the real query module is a one-import change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit.models import AuditEvent
from carepost.audit.service import chain_for
from carepost.core.errors import ValidationFailed

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _naive_utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if value else ""


@dataclass(frozen=True)
class AuditFilter:
    """What to look for. ``action`` matches exactly, or by prefix when it ends in ``.`` or
    ``*`` (``auth.`` finds every sign-in event)."""

    actor_id: str = ""
    action: str = ""
    outcome: str = ""
    object_type: str = ""
    object_id: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as URL query parameters (for links, paging and exports); times are
        UTC without an offset, as an HTML datetime-local input sends them."""
        values = {
            "actor_id": self.actor_id,
            "action": self.action,
            "outcome": self.outcome,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "since": _naive_utc(self.since),
            "until": _naive_utc(self.until),
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None = None


def parse_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise ValidationFailed("the page cursor is not valid", field="before")
    return int(cursor)


def find_audit_events(
    session: Session,
    tenant_id: uuid.UUID,
    filters: AuditFilter,
    *,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """One page of a tenant's audit events matching ``filters``, newest first."""
    before = parse_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    query = select(AuditEvent).where(
        AuditEvent.chain == chain_for(tenant_id), AuditEvent.tenant_id == tenant_id
    )
    if filters.actor_id:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action:
        if filters.action.endswith(("*", ".")):
            prefix = filters.action.rstrip("*")
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(AuditEvent.action.like(escaped + "%", escape="\\"))
        else:
            query = query.where(AuditEvent.action == filters.action)
    if filters.outcome:
        query = query.where(AuditEvent.outcome == filters.outcome)
    if filters.object_type:
        query = query.where(AuditEvent.object_type == filters.object_type)
    if filters.object_id:
        query = query.where(AuditEvent.object_id == filters.object_id)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, str(rows[-1].seq) if more and rows else None)


def recent_actions(session: Session, tenant_id: uuid.UUID, *, window: int = 1000) -> list[str]:
    """The distinct actions among a tenant's latest events (suggestions for the filter)."""
    latest = (
        select(AuditEvent.action)
        .where(AuditEvent.chain == chain_for(tenant_id), AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.seq.desc())
        .limit(window)
        .subquery()
    )
    return sorted(set(session.scalars(select(latest.c.action))))
