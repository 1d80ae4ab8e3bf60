"""A saved segment's page: its rule in words, the live count, sample members, export,
snapshots, and deleting it.

Members are shown as ids and journey stages to everyone who may read contacts; their
names and email addresses only on request (a button) to people holding ``phi:read``,
each such view audited as ``contact.view_phi`` (``via: segment``) exactly as the API
does. An export checks its columns with :func:`~carepost.segments.service.plan_export`
(PHI columns need ``phi:export``) and is audited before its first byte by
:func:`~carepost.segments.service.record_export`. A snapshot needs ``contacts:write``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from carepost.core.errors import ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.segments import service as segments
from carepost.web import segments_builder as sb
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import FormData
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

SAMPLE_SIZE = 20
NOTICES = {
    "created": "Segment saved.",
    "updated": "Segment changed.",
    "snapshot": "Snapshot taken.",
}
COLUMN_LABELS = {
    "id": "Contact id",
    "journey_stage": "Journey stage",
    "language": "Language",
    "timezone": "Time zone",
    "created_at": "Created",
    "updated_at": "Changed",
}


def _columns(console: Console, custom: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """The export's column choices; PHI ones only for people who may export PHI."""
    phi_ok = console.can("phi:export")
    options: list[dict[str, Any]] = [
        {"value": name, "label": COLUMN_LABELS.get(name, name), "phi": False}
        for name in segments.PLAIN_COLUMNS
    ]
    if phi_ok:
        options += [
            {"value": name, "label": name.replace("_", " ").capitalize(), "phi": True}
            for name in segments.PHI_COLUMNS
        ]
    for key, phi in custom:
        if phi_ok or not phi:
            options.append({"value": f"custom.{key}", "label": f"custom.{key}", "phi": phi})
    for option in options:
        option["checked"] = option["value"] in segments.DEFAULT_EXPORT_COLUMNS
    return options


def _detail(console: Console, segment_id: str, *, status: int = 200, **extra: Any) -> Response:
    from carepost.contacts.custom_fields import load_schema
    from carepost.web.segments import load_vocabulary

    target = parse_id(segment_id)
    with console.session() as session:
        row = segments.get_segment(session, console.principal.tenant_id, target)
        vocab = load_vocabulary(session, console.principal.tenant_id)
        count: int | None = None
        members: list[Any] = []
        fault = ""
        try:
            count = segments.count_segment(session, console.principal.keys, target)
            members = segments.segment_members(
                session,
                console.principal.keys,
                target,
                after=None,
                limit=SAMPLE_SIZE,
                with_phi=False,
            )
        except ValidationFailed as exc:
            fault = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
        snapshots = segments.list_snapshots(session, console.principal.tenant_id, target)
        schema = load_schema(session, console.principal.tenant_id)
        custom = [(key, spec.phi or spec.sealed) for key, spec in sorted(schema.items())]
    return console.render(
        "segments/detail.html",
        status=status,
        title=row.name,
        segment=row,
        summary=sb.describe(row.rule, dict(vocab.lists)),
        included=dict(vocab.lists).get(str(row.include_list_id)) if row.include_list_id else None,
        count=count,
        fault=fault,
        members=[{"id": str(m.id), "stage": m.journey_stage} for m in members],
        snapshots=snapshots,
        columns=_columns(console, custom),
        notice=notice_for(console.request, NOTICES),
        **extra,
    )


@router.get("/segments/{segment_id}")
def segment_page(
    segment_id: str, console: Annotated[Console, Depends(page("contacts:read"))]
) -> Response:
    return _detail(console, segment_id)


@router.post("/segments/{segment_id}/members")
def reveal_members(
    segment_id: str, console: Annotated[Console, Depends(page("phi:read"))]
) -> Response:
    """The sample with names and email addresses: PHI, so asked for and audited."""
    target = parse_id(segment_id)
    with console.session() as session:
        segments.get_segment(session, console.principal.tenant_id, target)
        contacts = segments.segment_members(
            session, console.principal.keys, target, after=None, limit=SAMPLE_SIZE, with_phi=True
        )
        segments.record_member_view(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            segment_id=target,
            contacts=contacts,
        )
        members = [
            {
                "id": str(c.id),
                "stage": c.journey_stage,
                "name": " ".join(p for p in (c.first_name, c.last_name) if p) or "—",
                "email": c.email or "—",
            }
            for c in contacts
        ]
    if console.htmx:
        return console.render("segments/_members.html", members=members, phi=True)
    return _detail(console, segment_id, revealed=members)


@router.post("/segments/{segment_id}/export")
def export_segment(
    segment_id: str,
    console: Annotated[Console, Depends(page("contacts:read"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = parse_id(segment_id)
    raw = data.get("columns", [])
    columns = [c for c in (raw if isinstance(raw, list) else [raw]) if c]
    runtime, keys = console.runtime, console.principal.keys
    try:
        with console.session() as session:
            segments.get_segment(session, console.principal.tenant_id, target)
            plan = segments.plan_export(session, console.principal.tenant_id, columns)
            if plan.phi_columns:
                console.principal.require("phi:export")
            segments.record_export(session, keys, target, plan, actor=console.principal.actor)
    except ValidationFailed as exc:
        return _detail(console, segment_id, status=exc.status, export_error=exc.detail)

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(plan.columns)
        with runtime.database.session() as stream:
            for index, row in enumerate(segments.export_rows(stream, keys, target, plan), start=1):
                writer.writerow(row)
                if index % segments.EXPORT_BATCH == 0:
                    yield buffer.getvalue()
                    buffer = io.StringIO()
                    writer = csv.writer(buffer)
        yield buffer.getvalue()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="segment-{target}.csv"'},
    )


@router.post("/segments/{segment_id}/snapshots")
def take_snapshot(
    segment_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = parse_id(segment_id)
    raw = data.get("reason", "")
    reason = (raw if isinstance(raw, str) else "").strip()
    if not reason or len(reason) > 200 or has_forbidden_characters(reason):
        with console.session() as session:
            segments.get_segment(session, console.principal.tenant_id, target)
        return _detail(
            console,
            segment_id,
            status=422,
            snapshot_error="Give a reason of one line, at most 200 characters.",
            reason=reason,
        )
    try:
        with console.session() as session:
            segments.snapshot_segment(
                session,
                console.principal.keys,
                target,
                reason=reason,
                actor=console.principal.actor,
            )
    except ValidationFailed as exc:
        return _detail(console, segment_id, status=exc.status, snapshot_error=exc.detail)
    return redirect(console.request, f"/segments/{target}?done=snapshot")


@router.get("/segments/{segment_id}/delete")
def confirm_delete(
    segment_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        row = segments.get_segment(session, console.principal.tenant_id, parse_id(segment_id))
    return console.render(
        "contacts/confirm_delete.html",
        title=f"Delete {row.name}?",
        heading=f"Delete the segment “{row.name}”?",
        consequences=[
            "The segment's rule is removed; no contact is changed.",
            "Its snapshots are kept, so a campaign taken from one can still send.",
        ],
        action=f"/segments/{row.id}/delete",
        cancel=f"/segments/{row.id}",
        submit="Delete segment",
    )


@router.post("/segments/{segment_id}/delete")
def delete_segment(
    segment_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        segments.delete_segment(
            session,
            console.principal.tenant_id,
            parse_id(segment_id),
            actor=console.principal.actor,
        )
    return redirect(console.request, "/segments?done=deleted")
