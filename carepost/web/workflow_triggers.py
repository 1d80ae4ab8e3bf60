"""How contacts enter a workflow on their own, in the console: the workflow's trigger
(``/workflows/{id}/trigger``) in words, and a form per kind to set, change or remove it.

The form is chosen by kind (a list join, a segment entry, a date milestone, a named
event); each saves through :func:`carepost.workflows.entry.set_trigger`, so the checks,
the ``workflow.trigger`` audit entry and the segment baseline are the API's. Errors the
service points at (``#/body/trigger/list_id``) land next to their field. A form
submission trigger waits for Secure Forms (no form exists to choose); the API takes it.
Reading needs ``workflows:read``, changing ``workflows:write``. See docs/workflows.md.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.views import notice_for
from carepost.web.workflows import Pickers, load_pickers
from carepost.workflows import entry, service
from carepost.workflows.models import WorkflowStatus

router = APIRouter(include_in_schema=False)
Reader = Annotated[Console, Depends(page("workflows:read"))]
Writer = Annotated[Console, Depends(page("workflows:write"))]

KINDS = (
    Choice("list_join", "A contact joins a list"),
    Choice("segment_entry", "A contact enters a segment"),
    Choice("date_milestone", "A date in the contact's record comes round"),
    Choice("event", "An event is recorded for the contact"),
)
KIND_NAMES = {c.value for c in KINDS}
NOTICES = {
    "saved": "The trigger is saved: contacts enter on their own while the workflow is active.",
    "removed": "The trigger is removed: contacts enter only when you or the API enroll them.",
}
BIRTH_DATE = ("birth_date", "Birth date (birth_date)")

FORMS = {
    "list_join": FormSpec(
        id="trigger",
        submit="Save trigger",
        fields=(
            Field(
                "list_id",
                "List",
                "select",
                required=True,
                hint="Each contact added to this list from now on enters (once).",
            ),
        ),
    ),
    "segment_entry": FormSpec(
        id="trigger",
        submit="Save trigger",
        fields=(
            Field(
                "segment_id",
                "Segment",
                "select",
                required=True,
                hint="Checked every minute: a contact who matches and has not been in this "
                "workflow enters.",
            ),
            Field(
                "existing_members",
                "Contacts already in the segment",
                "select",
                required=True,
                choices=(
                    Choice("skip", "Leave them out: only contacts who enter from now on"),
                    Choice("enroll", "Enroll them too, at the first check"),
                ),
            ),
        ),
    ),
    "date_milestone": FormSpec(
        id="trigger",
        submit="Save trigger",
        fields=(
            Field(
                "field",
                "Date field",
                "select",
                required=True,
                hint="Fields tokenized by day only (no date is decrypted to check them).",
            ),
            Field(
                "days_before",
                "Days before the date",
                "number",
                required=True,
                hint="0 for the day itself, up to 365.",
                attrs={"min": "0", "max": "365"},
            ),
            Field(
                "yearly",
                "Repeats",
                "select",
                required=True,
                choices=(
                    Choice("true", "Every year (birthdays, anniversaries)"),
                    Choice("false", "Once, for the date itself"),
                ),
            ),
        ),
    ),
    "event": FormSpec(
        id="trigger",
        submit="Save trigger",
        fields=(
            Field(
                "name",
                "Event name",
                required=True,
                hint="Lower case, for example portal_login; posted by the API or your systems.",
                attrs={"maxlength": "64", "list": "event-kinds"},
            ),
        ),
    ),
}
DEFAULTS = {
    "segment_entry": {"existing_members": "skip"},
    "date_milestone": {"days_before": "0", "yearly": "true"},
}


def describe_trigger(config: dict[str, Any] | None, pickers: Pickers) -> str:
    """The trigger in words (names of lists and segments, never contact data)."""
    if not config:
        return "No trigger: contacts enter when you or the API enroll them."
    kind = config.get("kind")
    if kind == "list_join":
        return f"A contact joins the list {pickers.name('lists', config['list_id'])}."
    if kind == "segment_entry":
        who = (
            "; contacts already in it when the trigger was set are left out"
            if config.get("existing_members") == "skip"
            else "; everyone in it at the first check enters too"
        )
        segment = pickers.name("segments", config["segment_id"])
        return f"A contact enters the segment {segment}{who}."
    if kind == "date_milestone":
        field = dict([BIRTH_DATE, *pickers.date_fields]).get(config["field"], config["field"])
        days = int(config.get("days_before", 0))
        when = "on the day of" if days == 0 else f"{days} day{'s' if days != 1 else ''} before"
        every = "every year" if config.get("yearly", True) else "once"
        return f"{when.capitalize()} the contact's {field}, {every}."
    if kind == "event":
        return f"The event {config['name']} is recorded for the contact."
    if kind == "form_submitted":
        return "The contact submits a form (set through the API)."
    return f"Trigger {kind}."


def _spec(kind: str, pickers: Pickers) -> FormSpec:
    spec = FORMS[kind]
    if kind == "list_join":
        return spec.with_choices("list_id", [Choice(k, v) for k, v in pickers.lists])
    if kind == "segment_entry":
        return spec.with_choices("segment_id", [Choice(k, v) for k, v in pickers.segments])
    if kind == "date_milestone":
        dates = [BIRTH_DATE, *pickers.date_fields]
        return spec.with_choices("field", [Choice(k, v) for k, v in dates])
    return spec


def _initial(kind: str, config: dict[str, Any] | None) -> dict[str, str]:
    values = dict(DEFAULTS.get(kind, {}))
    if config and config.get("kind") == kind:
        values.update(
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
        )
    return values


def _page(
    console: Console,
    workflow_id: uuid.UUID,
    *,
    kind: str = "",
    form: BoundForm | None = None,
    status: int = 200,
) -> Response:
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        workflow = service.get_workflow(session, tenant_id, workflow_id)
        config = entry.get_trigger(session, tenant_id, workflow_id)
        pickers = load_pickers(session, tenant_id)
    kind = kind if kind in KIND_NAMES else (config or {}).get("kind", "")
    kind = kind if kind in KIND_NAMES else ""
    if form is None and kind and console.can("workflows:write"):
        form = _spec(kind, pickers).bind(None, **_initial(kind, config))
    return console.render(
        "workflows/trigger.html",
        status=status,
        title=f"{workflow.name}: trigger",
        workflow=workflow,
        config=config,
        described=describe_trigger(config, pickers),
        kinds=KINDS,
        kind=kind,
        form=form,
        event_kinds=pickers.event_kinds,
        editable=console.can("workflows:write") and workflow.status != WorkflowStatus.ARCHIVED,
        notice=notice_for(console.request, NOTICES),  # shown by layout.html
    )


@router.get("/workflows/{workflow_id}/trigger")
def trigger_page(workflow_id: str, console: Reader, kind: str = "") -> Response:
    return _page(console, parse_id(workflow_id), kind=kind)


@router.post("/workflows/{workflow_id}/trigger")
def save_trigger(
    workflow_id: str, console: Writer, data: Annotated[FormData, Depends(form_data)]
) -> Response:
    the_id = parse_id(workflow_id)
    kind = str(data.get("kind") or "")
    if kind not in KIND_NAMES:
        return _page(console, the_id, status=422)
    with console.session() as session:
        pickers = load_pickers(session, console.principal.tenant_id)
    form = _spec(kind, pickers).bind(data)
    try:
        form.validate()
        config = {"kind": kind, **{f.name: form.value(f.name) for f in form.fields}}
        with console.session() as session:
            entry.set_trigger(
                session, console.principal.tenant_id, the_id, config, actor=console.principal.actor
            )
    except CarepostError as exc:
        form.failed(exc)
        return _page(console, the_id, kind=kind, form=form, status=exc.status)
    return redirect(console.request, f"/workflows/{the_id}/trigger?done=saved")


@router.post("/workflows/{workflow_id}/trigger/delete")
def delete_trigger(workflow_id: str, console: Writer) -> Response:
    the_id = parse_id(workflow_id)
    with console.session() as session:
        entry.set_trigger(
            session, console.principal.tenant_id, the_id, None, actor=console.principal.actor
        )
    return redirect(console.request, f"/workflows/{the_id}/trigger?done=removed")
