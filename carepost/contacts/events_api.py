"""REST routes for contact events: posting them (one or a batch) and a contact's timeline.

Posting needs ``contacts:write``; reading a timeline ``contacts:read``. Event
properties may hold PHI: they are shown only with ``phi:read``, and a page that
shows any is audited as ``contact.view_phi``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.contacts import events, service
from carepost.contacts.activity_schemas import (
    EVENT_ITEM_DESCRIPTION,
    EventBatch,
    EventBatchOutcome,
    EventOut,
    EventPage,
    EventRecorded,
)
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.runtime import Runtime

router = APIRouter(tags=["events"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
PHI_PERMISSION = "phi:read"
BODY_DESCRIPTION = (
    'One event, or {"items": [...]} with up to 10,000 events. ' + EVENT_ITEM_DESCRIPTION
)


def _batch(body: dict[str, Any]) -> EventBatch:
    try:
        return EventBatch.model_validate(body)
    except ValidationError as invalid:
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"])} for error in invalid.errors()]
        ) from None


def _wake_workflows(
    session: Any, principal: Principal, items: list[Any], results: list[Any]
) -> None:
    """Events recorded wake the workflow runs waiting for them (``custom:<kind>``) and
    enroll into workflows triggered by them, in this transaction."""
    from carepost.workflows.wakeups import on_contact_events

    by_kind: dict[str, list[uuid.UUID]] = {}
    for item, result in zip(items, results, strict=True):
        if result.id is not None and result.contact_id is not None:
            by_kind.setdefault(str(item.get("kind")), []).append(result.contact_id)
    if by_kind:
        on_contact_events(session, principal.tenant_id, by_kind)


@router.post(
    "/events",
    summary="Record one event (201) or a batch of up to 10,000 (200, a result per item)",
    responses={201: {"description": "Recorded", "model": EventRecorded}},
)
def post_events(
    body: Annotated[dict[str, Any], Body(description=BODY_DESCRIPTION)],
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> EventBatchOutcome | EventRecorded:
    items = _batch(body).items if "items" in body else [body]
    with runtime.bound_session(principal.keys) as session:
        results = events.record_events(session, principal.keys, items, actor=principal.actor)
        _wake_workflows(session, principal, items, results)
        if "items" in body:
            return EventBatchOutcome.of(results)
        [result] = results
        if result.errors:
            # Raising rolls the unit of work back: nothing of this call is kept.
            first = result.errors[0]
            raise ValidationFailed(
                first.message,
                errors=[
                    FieldError(f"#/body/{e.field}".rstrip("/"), e.message) for e in result.errors
                ],
            )
    assert result.id is not None and result.contact_id is not None
    response.status_code = status.HTTP_201_CREATED
    return EventRecorded(id=result.id, contact_id=result.contact_id)


@router.get(
    "/contacts/{contact_id}/events",
    summary="A contact's events, newest first (properties only with phi:read; audited)",
)
def contact_events(
    contact_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    show_phi = principal.can(PHI_PERMISSION)
    before = events.decode_event_cursor(cursor)
    with runtime.bound_session(principal.keys) as session:
        contact = service.get_contact(session, principal.tenant_id, contact_id, with_phi=False)
        entries = events.contact_timeline(
            session,
            principal.tenant_id,
            contact.id,
            kind=kind,
            before=before,
            limit=limit + 1,
            with_properties=show_phi,
        )
        more = len(entries) > limit
        entries = entries[:limit]
        if show_phi and any(entry.sealed for entry in entries):
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=[contact],
                via="events",
            )
        last = entries[-1] if entries else None
        return EventPage(
            items=[
                EventOut(
                    id=entry.id,
                    kind=entry.kind,
                    occurred_at=entry.occurred_at,
                    source=entry.source,
                    properties=entry.properties,
                    properties_redacted=entry.sealed and not show_phi,
                )
                for entry in entries
            ],
            next_cursor=(
                events.encode_event_cursor(last.occurred_at, last.id) if more and last else None
            ),
        )
