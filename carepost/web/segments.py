"""The segment builder: saved segments, and a rule editor with a live count.

A rule is written in the segment language (docs/segments.md) as JSON. While it is
typed, HTMX posts it to ``/segments/preview``, which asks the segments service for the
count of contacts the rule selects now (:func:`carepost.segments.service.count_rule`)
or for what is wrong with it, each fault pointing at its node (``rule/all/2/value``).
Saving goes through :func:`~carepost.segments.service.create_segment`, which checks the
rule again. A count discloses no PHI (it is an aggregate, as the API's preview).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.segments import service as segments
from carepost.web.console import Console, form_data, page, redirect
from carepost.web.forms import BoundForm, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

MAX_RULE_CHARACTERS = 100_000
EXAMPLE_RULE = {
    "all": [
        {"field": "journey_stage", "op": "in", "value": ["active", "overdue"]},
        {"consent": {"channel": "email", "purpose": "marketing", "status": "granted"}},
        {"not": {"suppressed": "email"}},
    ]
}
NOTICES = {"created": "Segment saved."}

SEGMENT_FORM = FormSpec(
    id="segment",
    submit="Save segment",
    fields=(
        Field("name", "Name", required=True, attrs={"maxlength": "200"}),
        Field("description", "Description", "textarea", attrs={"maxlength": "2000"}),
        Field(
            "rule",
            "Rule (JSON)",
            "textarea",
            required=True,
            hint='Groups {"all": […]}, {"any": […]}, {"not": …} over conditions on '
            "fields, lists, consent, suppression and events (see docs/segments.md). "
            "The count below follows what you type.",
            attrs={
                "spellcheck": "false",
                "rows": "14",
                "hx-post": "/segments/preview",
                "hx-trigger": "input changed delay:600ms, load",
                "hx-target": "#live-count",
                "hx-swap": "innerHTML",
            },
        ),
    ),
)

SEGMENT_TABLE = Table(
    caption="Saved segments",
    id="segment",
    row_id=lambda s: str(s.id),
    empty="No segments yet.",
    extra={"cards": True},
    columns=(
        Column("Name", lambda s: s.name),
        Column("Description", lambda s: s.description or "—"),
        Column("Created", lambda s: s.created_at, kind="time"),
        Column("Changed", lambda s: s.updated_at, kind="time"),
    ),
)


def read_rule(text: str) -> Any:
    """The rule as JSON; a syntax error names its line and column, never the text."""
    if len(text) > MAX_RULE_CHARACTERS:
        raise ValidationFailed(f"a rule is at most {MAX_RULE_CHARACTERS} characters", field="rule")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", field="rule"
        ) from None


def rule_faults(exc: ValidationFailed) -> list[str]:
    """Each fault of a rule as ``pointer: message`` (the pointer says which node)."""
    return [
        f"{e.field}: {e.message}" if e.field.startswith("rule/") else e.message
        for e in (exc.errors or [FieldError("rule", exc.detail)])
    ]


def _page(console: Console, *, form: BoundForm | None = None, status: int = 200) -> Response:
    with console.session() as session:
        rows = segments.list_segments(session, console.principal.tenant_id, after=None, limit=500)
    return console.render(
        "segments/list.html",
        status=status,
        title="Segments",
        table=SEGMENT_TABLE,
        rows=rows,
        form=form or SEGMENT_FORM.bind(rule=json.dumps(EXAMPLE_RULE, indent=2)),
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/segments")
def segments_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    return _page(console)


@router.post("/segments/preview")
def preview(
    console: Annotated[Console, Depends(page("contacts:read"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    raw = data.get("rule", "")
    text = raw if isinstance(raw, str) else ""
    context: dict[str, Any] = {"count": None, "faults": []}
    try:
        rule = read_rule(text)
        with console.session() as session:
            context["count"] = segments.count_rule(session, console.principal.keys, rule)
    except ValidationFailed as exc:
        context["faults"] = rule_faults(exc)
    return console.render("segments/_count.html", **context)


@router.post("/segments")
def create_segment(
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = SEGMENT_FORM.bind(data)
    try:
        name = form.value("name").strip()
        form.validate(
            *(
                [FieldError("name", "use one line without control characters")]
                if has_forbidden_characters(name)
                else []
            )
        )
        rule = read_rule(form.value("rule"))
        with console.session() as session:
            segments.create_segment(
                session,
                console.principal.tenant_id,
                name=name,
                description=form.value("description").strip(),
                rule=rule,
                actor=console.principal.actor,
            )
    except ValidationFailed as exc:
        if any(e.field.startswith("rule") for e in exc.errors):
            form.add_error("rule", "; ".join(rule_faults(exc)))
        else:
            form.failed(exc)
        return _page(console, form=form, status=exc.status)
    except CarepostError as exc:
        form.failed(exc)
        return _page(console, form=form, status=exc.status)
    return redirect(console.request, "/segments?done=created")
