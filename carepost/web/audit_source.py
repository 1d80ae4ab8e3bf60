"""Where the console's audit trail browser reads events from: the audit domain's own
query (:func:`carepost.audit.query.list_events`), fed from the browser's form.

:class:`AuditFilter` is the form's view of a filter (times as an HTML datetime-local
input sends them, UTC without an offset); it converts to the domain's
:class:`~carepost.audit.schemas.AuditFilters` for queries and exports.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import query
from carepost.audit.models import AuditEvent
from carepost.audit.schemas import AuditFilters
from carepost.audit.service import chain_for
from carepost.core.errors import ValidationFailed

PAGE_SIZE = 50


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

    def as_query(self, *, for_api: bool = False) -> dict[str, str]:
        """The filter as URL query parameters: for console links, times are UTC without
        an offset, as an HTML datetime-local input sends them; for the API (exports),
        they carry their ``Z``."""
        zone = "Z" if for_api else ""
        values = {
            "actor_id": self.actor_id,
            "action": self.action,
            "outcome": self.outcome,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "since": _naive_utc(self.since) + zone if self.since else "",
            "until": _naive_utc(self.until) + zone if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None = None


def to_filters(filters: AuditFilter) -> AuditFilters:
    """The domain filter for a form filter; errors name the form's field."""
    values = {
        "actor_id": filters.actor_id,
        "action": filters.action,
        "outcome": filters.outcome,
        "object_type": filters.object_type,
        "object_id": filters.object_id,
        "since": filters.since,
        "until": filters.until,
    }
    try:
        return AuditFilters(**{k: v for k, v in values.items() if v not in ("", None)})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "since"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(message, field=name) from None


def find_audit_events(
    session: Session,
    tenant_id: uuid.UUID,
    filters: AuditFilter,
    *,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> AuditPage:
    """One page of a tenant's audit events matching ``filters``, newest first."""
    try:
        page = query.list_events(
            session,
            tenant_id,
            to_filters(filters),
            cursor=cursor or None,
            limit=max(1, min(limit, query.MAX_PAGE_SIZE)),
        )
    except ValidationFailed as exc:
        if any(error.field == "#/query/cursor" for error in exc.errors):
            raise ValidationFailed("the page cursor is not valid", field="before") from None
        raise
    return AuditPage(page.events, page.next_cursor)


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
