"""REST routes for segments (``/segments``): saved rules, live counts, members,
exports and snapshots.

Reading needs ``contacts:read``, changing ``contacts:write``. Members show their
PHI only with ``phi:read`` (each such page audited as ``contact.view_phi``); an
export with PHI columns needs ``phi:export`` and every export is audited with its
row count and column names before the first byte goes out.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import StreamingResponse

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.contacts import custom_fields, sync
from carepost.contacts.schemas import ContactOut
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.core.runtime import Runtime
from carepost.segments import service
from carepost.segments.schemas import (
    CountOut,
    ExportIn,
    PreviewOut,
    RuleError,
    RuleIn,
    SegmentCreate,
    SegmentOut,
    SegmentUpdate,
    SnapshotIn,
    SnapshotOut,
)

router = APIRouter(prefix="/segments", tags=["segments"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=500)]
PHI_READ = "phi:read"
PHI_EXPORT = "phi:export"


def _pointer(field: str) -> str:
    return field if field.startswith("#/") else "#/body/" + field


@router.get("", summary="List the segments")
def list_segments(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[SegmentOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_segments(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[SegmentOut](
        items=[SegmentOut.of(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Save a segment")
def create_segment(body: SegmentCreate, runtime: RuntimeDep, principal: Writer) -> SegmentOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.create_segment(
            session,
            principal.tenant_id,
            name=body.name,
            description=body.description,
            rule=body.rule,
            actor=principal.actor,
        )
        return SegmentOut.of(row)


@router.post(
    "/preview",
    summary="Count the contacts a rule selects now, or say what is wrong with it (live count)",
)
def preview(body: RuleIn, runtime: RuntimeDep, principal: Reader) -> PreviewOut:
    with runtime.bound_session(principal.keys) as session:
        try:
            count = service.count_rule(session, principal.keys, body.rule)
        except ValidationFailed as failed:
            errors = [RuleError(pointer=_pointer(e.field), detail=e.message) for e in failed.errors]
            return PreviewOut(valid=False, count=None, errors=errors)
    return PreviewOut(valid=True, count=count, errors=[])


@router.get("/{segment_id}", summary="Get a segment")
def get_segment(segment_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> SegmentOut:
    with runtime.bound_session(principal.keys) as session:
        return SegmentOut.of(service.get_segment(session, principal.tenant_id, segment_id))


@router.patch("/{segment_id}", summary="Rename a segment or change its rule")
def update_segment(
    segment_id: uuid.UUID, body: SegmentUpdate, runtime: RuntimeDep, principal: Writer
) -> SegmentOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_segment(
            session, principal.tenant_id, segment_id, changes=body.changes(), actor=principal.actor
        )
        return SegmentOut.of(row)


@router.delete(
    "/{segment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a segment (its snapshots stay)",
)
def delete_segment(segment_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_segment(session, principal.tenant_id, segment_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{segment_id}/count", summary="Count the segment's members now")
def count_segment(segment_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> CountOut:
    with runtime.bound_session(principal.keys) as session:
        counted_at = utcnow()
        count = service.count_segment(session, principal.keys, segment_id)
    return CountOut(count=count, counted_at=counted_at)


@router.get(
    "/{segment_id}/members",
    summary="The segment's members now, in id order (PHI only with phi:read; audited)",
)
def list_members(
    segment_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[ContactOut]:
    show_phi = principal.can(PHI_READ)
    with runtime.bound_session(principal.keys) as session:
        contacts = service.segment_members(
            session,
            principal.keys,
            segment_id,
            after=decode_cursor(cursor),
            limit=limit + 1,
            with_phi=show_phi,
        )
        more = len(contacts) > limit
        contacts = contacts[:limit]
        if not show_phi:
            items = [ContactOut.of(c, show_phi=False) for c in contacts]
        else:
            service.record_member_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                segment_id=segment_id,
                contacts=contacts,
            )
            ids = sync.identifiers_of(session, principal.tenant_id, [c.id for c in contacts])
            known = custom_fields.load_schema(session, principal.tenant_id).keys()
            items = [
                ContactOut.of(c, show_phi=True, external_ids=ids.get(c.id), known_fields=known)
                for c in contacts
            ]
        return Page[ContactOut](
            items=items, next_cursor=encode_cursor(contacts[-1].id) if more else None
        )


@router.post(
    "/{segment_id}/export",
    summary="Export the members as CSV (PHI columns need phi:export; every export audited)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_members(
    segment_id: uuid.UUID, body: ExportIn, runtime: RuntimeDep, principal: Reader
) -> StreamingResponse:
    with runtime.bound_session(principal.keys) as session:
        service.get_segment(session, principal.tenant_id, segment_id)
        plan = service.plan_export(session, principal.tenant_id, body.columns)
        if plan.phi_columns:
            principal.require(PHI_EXPORT)
        service.record_export(session, principal.keys, segment_id, plan, actor=principal.actor)

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(plan.columns)
        yield buffer.getvalue()
        with runtime.database.session() as session:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for index, row in enumerate(
                service.export_rows(session, principal.keys, segment_id, plan), start=1
            ):
                writer.writerow(row)
                if index % service.EXPORT_BATCH == 0:
                    yield buffer.getvalue()
                    buffer = io.StringIO()
                    writer = csv.writer(buffer)
            yield buffer.getvalue()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="segment.csv"'},
    )


@router.post(
    "/{segment_id}/snapshots",
    status_code=status.HTTP_201_CREATED,
    summary="Freeze the segment's members now (for a send that happens later)",
)
def create_snapshot(
    segment_id: uuid.UUID, body: SnapshotIn, runtime: RuntimeDep, principal: Writer
) -> SnapshotOut:
    with runtime.bound_session(principal.keys) as session:
        snapshot_id = service.snapshot_segment(
            session, principal.keys, segment_id, reason=body.reason, actor=principal.actor
        )
        row = service.get_snapshot(session, principal.tenant_id, segment_id, snapshot_id)
        return SnapshotOut.of(row)


@router.get("/{segment_id}/snapshots/{snapshot_id}", summary="A snapshot and its member count")
def get_snapshot(
    segment_id: uuid.UUID, snapshot_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> SnapshotOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.get_snapshot(session, principal.tenant_id, segment_id, snapshot_id)
        return SnapshotOut.of(row)
