"""REST routes for the audit trail: browse with filters, fetch one event, export, verify.

The tenant always comes from the credential. Exports are themselves recorded in the
trail (``audit.export``) before the first byte is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.audit import query, service, verify
from carepost.audit.schemas import AuditEventOut, AuditEventPage, AuditFilters, ExportFormat
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.runtime import Runtime
from carepost.core.types import IsoDateTime

router = APIRouter(prefix="/audit", tags=["audit trail"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def audit_filters(
    actor_id: Annotated[str | None, Query(max_length=64)] = None,
    actor_type: Annotated[str | None, Query(max_length=20)] = None,
    action: Annotated[
        str | None, Query(max_length=81, description="Exact, or a prefix: 'auth.*'")
    ] = None,
    object_type: Annotated[str | None, Query(max_length=40)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(max_length=20)] = None,
    since: Annotated[IsoDateTime | None, Query(description="Inclusive, with a time zone")] = None,
    until: Annotated[IsoDateTime | None, Query(description="Exclusive, with a time zone")] = None,
) -> AuditFilters:
    """The filters of the query string, validated into AuditFilters (errors name the field)."""
    values: dict[str, Any] = {
        "actor_id": actor_id,
        "actor_type": actor_type,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    try:
        return AuditFilters(**{k: v for k, v in values.items() if v not in (None, "")})
    except ValidationError as exc:
        errors = [
            FieldError(
                "#/query/" + ".".join(str(p) for p in e["loc"]) if e["loc"] else "#/query",
                e["msg"],
            )
            for e in exc.errors()
        ]
        raise ValidationFailed(errors[0].message, errors=errors) from None


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


@router.get("/events", summary="Browse the audit trail, newest first, with filters")
def list_events(
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("audit:read"))],
    filters: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=query.MAX_PAGE_SIZE)] = query.DEFAULT_PAGE_SIZE,
) -> AuditEventPage:
    with runtime.database.session() as session:
        page = query.list_events(session, principal.tenant_id, filters, cursor=cursor, limit=limit)
        return AuditEventPage(
            items=[AuditEventOut.model_validate(e) for e in page.events],
            next_cursor=page.next_cursor,
        )


@router.get("/events/{event_id}", summary="One audit event, with its hashes")
def get_event(
    event_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("audit:read"))],
) -> AuditEventOut:
    with runtime.database.session() as session:
        return AuditEventOut.model_validate(query.get_event(session, principal.tenant_id, event_id))


@router.get(
    "/export",
    summary="Export the audit trail as CSV or JSON Lines (recorded in the trail)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export(
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("audit:export"))],
    filters: FiltersDep,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "jsonl",
) -> StreamingResponse:
    export_format: ExportFormat = format
    with runtime.database.session() as session:
        service.record(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="audit.export",
            object_type="tenant",
            object_id=principal.tenant_id,
            details={"format": export_format, "filters": filters.model_dump(mode="json")},
        )

    def chunks() -> Iterator[str]:
        with runtime.database.session() as session:
            yield from query.export_events(session, principal.tenant_id, filters, export_format)

    media = "text/csv; charset=utf-8" if export_format == "csv" else "application/x-ndjson"
    filename = f"audit-{principal.tenant_slug}.{export_format}"
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


class VerificationOut(BaseModel):
    ok: bool
    events_checked: int
    problems: list[str]
    head_seq: int | None
    head_hash: str | None


@router.get("/verify", summary="Verify this organization's audit chain end to end")
def verify_chain(
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("audit:read"))],
) -> VerificationOut:
    chain = service.chain_for(principal.tenant_id)
    with runtime.database.session() as session:
        report = verify.verify_chains(session, chain=chain)
    with runtime.database.session() as session:
        service.record(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="audit.verify",
            outcome="success" if report.ok else "failure",
            details={"events": report.events_checked, "problems": len(report.problems)},
        )
    head = report.heads.get(chain)
    return VerificationOut(
        ok=report.ok,
        events_checked=report.events_checked,
        problems=[p.describe() for p in report.problems],
        head_seq=head.seq if head else None,
        head_hash=head.hash if head else None,
    )
