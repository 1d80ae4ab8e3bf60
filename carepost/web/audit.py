"""The audit trail browser: filter a tenant's events by user, action, outcome, object and
time window, page through them newest first, and export what the filter selects.

Filters live in the URL (a GET form), so a filtered view can be bookmarked or sent to a
colleague who may read the trail. The export links hand the same filter to the API
(``/api/v1/audit/export?format=csv|jsonl``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from carepost.accounts import service as accounts
from carepost.audit.models import AuditEvent
from carepost.core.errors import FieldError, ValidationFailed
from carepost.web.audit_source import AuditFilter, find_audit_events, recent_actions
from carepost.web.console import Console, page
from carepost.web.forms import BoundForm, Choice, Field, FormSpec
from carepost.web.tables import Column, Table

router = APIRouter(include_in_schema=False)

EXPORT_URL = "/api/v1/audit/export"
OUTCOMES = ("success", "failure", "denied", "locked")

FILTER_FORM = FormSpec(
    id="audit-filter",
    submit="Apply filters",
    mark_optional=False,
    fields=(
        Field("actor_id", "User", "select"),
        Field(
            "action",
            "Action",
            attrs={"list": "audit-actions", "spellcheck": "false", "maxlength": "80"},
        ),
        Field(
            "outcome",
            "Outcome",
            "select",
            choices=(Choice("", "Any outcome"), *(Choice(o, o.capitalize()) for o in OUTCOMES)),
        ),
        Field(
            "object_type",
            "Object type",
            attrs={"maxlength": "40", "spellcheck": "false", "placeholder": "user, api_key …"},
        ),
        Field("object_id", "Object id", attrs={"maxlength": "64", "spellcheck": "false"}),
        Field("since", "From (UTC)", "datetime-local"),
        Field("until", "Until (UTC)", "datetime-local"),
    ),
)

FILTER_FORM_NAMES = frozenset(f.name for f in FILTER_FORM.fields)

EVENT_TABLE = Table(
    caption="Audit events, newest first",
    id="event",
    empty="No audit events match these filters.",
    columns=(
        Column("When", lambda e: e.occurred_at, kind="time"),
        Column("Who", template="cells/audit_actor.html"),
        Column("Action", lambda e: e.action, kind="code"),
        Column("Outcome", lambda e: e.outcome, kind="badge"),
        Column("Object", template="cells/audit_object.html"),
        Column("From", lambda e: e.client_address, kind="code"),
        Column("Details", template="cells/audit_details.html"),
    ),
)


def _parse_time(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed("enter a date and time", field=name) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def read_filter(form: BoundForm) -> AuditFilter:
    errors: list[FieldError] = []
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = _parse_time(form.value(name), name)
        except ValidationFailed as exc:
            errors.extend(exc.errors)
            times[name] = None
    form.validate(*errors)
    return AuditFilter(
        actor_id=form.value("actor_id").strip(),
        action=form.value("action").strip(),
        outcome=form.value("outcome").strip(),
        object_type=form.value("object_type").strip(),
        object_id=form.value("object_id").strip(),
        since=times["since"],
        until=times["until"],
    )


def details_text(event: AuditEvent) -> str:
    parts = [f"{key}={value}" for key, value in sorted((event.details or {}).items())]
    if event.reason:
        parts.insert(0, f"reason: {event.reason}")
    return "; ".join(parts)


@router.get("/audit")
def audit_page(
    request: Request, console: Annotated[Console, Depends(page("audit:read"))]
) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in FILTER_FORM_NAMES}
    with console.session() as session:
        users = accounts.list_users(session, console.principal.tenant_id)
        actions = recent_actions(session, console.principal.tenant_id)
    actor_choices = [Choice("", "Anyone"), *(Choice(str(u.id), u.email) for u in users)]
    current_actor = params.get("actor_id", "")
    if current_actor and current_actor not in {c.value for c in actor_choices}:
        actor_choices.append(Choice(current_actor, f"actor {current_actor[:12]}…"))
    form = FILTER_FORM.with_choices("actor_id", actor_choices).bind(params)
    status = 200
    events: list[AuditEvent] = []
    next_cursor = None
    filters = AuditFilter()
    try:
        filters = read_filter(form)
        with console.session() as session:
            found = find_audit_events(
                session,
                console.principal.tenant_id,
                filters,
                cursor=request.query_params.get("before"),
            )
        events, next_cursor = found.events, found.next_cursor
    except ValidationFailed as exc:
        form.failed(exc)
        status = 422
    query = filters.as_query()
    api_query = filters.as_query(for_api=True)
    return console.render(
        "audit.html",
        status=status,
        form=form,
        table=EVENT_TABLE,
        rows=events,
        actions=actions,
        details_text=details_text,
        paged=bool(request.query_params.get("before")),
        newest_url="/audit?" + urlencode(query),
        older_url=("/audit?" + urlencode({**query, "before": next_cursor}))
        if next_cursor
        else None,
        export_csv=f"{EXPORT_URL}?" + urlencode({"format": "csv", **api_query}),
        export_jsonl=f"{EXPORT_URL}?" + urlencode({"format": "jsonl", **api_query}),
        title="Audit trail",
    )
