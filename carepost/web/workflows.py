"""Workflows in the console: the list, a new workflow, the visual builder, status
changes, publishing a new version (with what it does to contacts in flight), the
version history, enrolling a list or segment, a dry run for a sample contact, and
each contact's run.

Thin views over :mod:`carepost.workflows` with the API's permissions: reading and
simulating need ``workflows:read``, changing ``workflows:write``, enrolling
``workflows:enroll``. The builder (:mod:`carepost.web.workflows_builder`) keeps the
graph being edited in its form; every change posts it to ``/workflows/{id}/builder``
(HTMX), which applies the change, checks the result with
:func:`carepost.workflows.validation.check_graph` and shows each problem next to its
step. "Save draft" stores a draft's graph; for a live workflow "Review and publish"
shows how many contacts sit on steps the new version removes and where they go
(:func:`carepost.workflows.service.plan_migration`) before publishing it.

A dry run walks a real contact through the draft: its branches and date waits read
the contact's data, so the page shows the path only up to the first step that
depends on them, unless a person holding ``phi:read`` reveals it (a POST, audited as
``contact.view_phi`` with ``via=workflow_simulation``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.contacts import custom_fields, stages
from carepost.contacts import lists as contact_lists
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import EventKind
from carepost.contacts.tokens import FieldType
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError, FieldError, NotFound, ValidationFailed
from carepost.messages.sending import SendLimits
from carepost.segments import service as segments
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary as rule_vocabulary
from carepost.templates import service as templates
from carepost.web import workflows_builder as wb
from carepost.web import workflows_conditions as wc
from carepost.web.console import Console, form_data, page, parse_id, redirect, sentence
from carepost.web.forms import Choice, Field, FormData, FormSpec
from carepost.web.segments import load_vocabulary as segment_vocabulary
from carepost.web.segments_builder import describe as describe_rule
from carepost.web.tables import MASK
from carepost.web.views import alert_response, notice_for
from carepost.webhooks import service as webhooks
from carepost.workflows import console_queries as queries
from carepost.workflows import entry, service, triggers
from carepost.workflows.models import IN_FLIGHT, Workflow, WorkflowStatus
from carepost.workflows.simulate import simulate
from carepost.workflows.steps import STEP_TYPES
from carepost.workflows.validation import check_graph

router = APIRouter(include_in_schema=False)
READ, WRITE, ENROLL, PHI = "workflows:read", "workflows:write", "workflows:enroll", "phi:read"
CHOICES_LIMIT = 500
NOTICES = {
    "created": "The workflow is created as a draft. Add its steps below, then activate it.",
    "saved": "The draft is saved.",
    "activated": "The workflow is active: contacts you enroll start at its first step.",
    "paused": "The workflow is paused: contacts keep their place until you resume it.",
    "resumed": "The workflow is resumed.",
    "archived": "The workflow is archived: every contact in it has exited.",
    "published": "The new version is published.",
    "settings": "The settings are saved.",
}
# Steps whose outcome or timing reads the contact's own data (PHI).
DATA_DEPENDENT = {"branch", "wait_until"}

SETTINGS_FORM = FormSpec(
    id="workflow",
    submit="Create workflow",
    fields=(
        Field("name", "Workflow name", required=True, attrs={"maxlength": "200"}),
        Field("sender_name", "Sender name", attrs={"maxlength": "200"}),
        Field(
            "sender_address",
            "Sender address",
            "email",
            required=True,
            hint="On one of the organization's verified sending domains.",
            attrs={"maxlength": "320"},
        ),
        Field("reply_to", "Reply-to address", "email", attrs={"maxlength": "320"}),
        Field(
            "priority",
            "Priority",
            "select",
            hint="The queue priority of the workflow's emails.",
            choices=(
                Choice("normal", "Normal"),
                Choice("high", "High (reminders, time-sensitive)"),
                Choice("bulk", "Bulk"),
            ),
        ),
    ),
)


# --- what the pickers offer ----------------------------------------------------------------


@cache
def time_zones() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


@dataclass
class Pickers:
    templates: list[tuple[str, str]]
    lists: list[tuple[str, str]]
    segments: list[tuple[str, str]]
    stages: list[tuple[str, str]]
    endpoints: list[tuple[str, str]]
    date_fields: list[tuple[str, str]]
    fields: list[tuple[str, str]]
    event_kinds: list[str]
    zones: tuple[str, ...] = field(default_factory=time_zones)

    def name(self, kind: str, value: Any) -> str:
        for key, label in getattr(self, kind):
            if key == str(value):
                return str(label)
        return "(not found)"


def load_pickers(session: Session, tenant_id: uuid.UUID) -> Pickers:
    schema = custom_fields.list_fields(session, tenant_id)
    kinds = session.scalars(
        select(EventKind.key).where(EventKind.tenant_id == tenant_id).order_by(EventKind.key)
    )
    return Pickers(
        templates=[
            (str(t.id), t.name)
            for t in templates.list_templates(session, tenant_id, after=None, limit=CHOICES_LIMIT)
        ],
        lists=[
            (str(r.id), r.name)
            for r in contact_lists.list_lists(session, tenant_id, after=None, limit=CHOICES_LIMIT)
        ],
        segments=[
            (str(r.id), r.name)
            for r in segments.list_segments(session, tenant_id, after=None, limit=CHOICES_LIMIT)
        ],
        stages=stages.stage_choices(session, tenant_id),
        endpoints=[(str(e.id), e.url) for e in webhooks.list_endpoints(session, tenant_id)],
        date_fields=[
            (f.key, f"{f.label} ({f.key})")
            for f in schema
            if f.type in (FieldType.DATE, FieldType.DATETIME)
        ],
        fields=[(f.key, f"{f.label} ({f.key})") for f in schema],
        event_kinds=list(kinds),
    )


# --- steps in words -------------------------------------------------------------------------

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def duration_text(value: Any) -> str:
    if not isinstance(value, dict):
        return "?"
    parts = []
    for unit in ("days", "hours", "minutes"):
        amount = value.get(unit) or 0
        if amount:
            parts.append(f"{amount} {unit[:-1] if amount == 1 else unit}")
    return ", ".join(parts) or "0 minutes"


def _minutes_text(minutes: int) -> str:
    sign = "before" if minutes < 0 else "after"
    minutes = abs(minutes)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{duration_text({'days': days, 'hours': hours, 'minutes': mins})} {sign}"


def describe_step(step: wb.Step, pickers: Pickers) -> str:
    """One line a marketer reads on the diagram."""
    kind = step.get("type")
    if kind == "send_email":
        purpose = step.get("purpose", "marketing")
        return f"“{pickers.name('templates', step.get('template_id'))}” ({purpose})"
    if kind == "wait_duration":
        return duration_text(step.get("duration"))
    if kind == "wait_until":
        until = step.get("until") or {}
        if until.get("kind") == "date":
            return f"until {until.get('at')}"
        if until.get("kind") == "field":
            zone = "the contact's zone" if until.get("contact_timezone", True) else ""
            zone = zone or until.get("timezone", "UTC")
            return (
                f"{_minutes_text(int(until.get('offset_minutes') or 0))} the contact's "
                f"“{until.get('field')}” (dates at {until.get('at_time', '09:00')}, {zone})"
            )
        days = until.get("days_of_week")
        which = ", ".join(DAYS[d] for d in days if 0 <= d < 7) if days else "any day"
        if until.get("days_of_month"):
            which += " on days " + ", ".join(str(d) for d in until["days_of_month"])
        zone = "contact's zone" if until.get("contact_timezone") else until.get("timezone", "UTC")
        return f"{which}, {until.get('start', '00:00')} to {until.get('end', '23:59:59')} {zone}"
    if kind == "wait_for_event":
        event = step.get("event") or {}
        what = {
            "opened": "an open of the email",
            "clicked": "a click in the email",
            "custom": f"the event “{event.get('name')}”",
            "field_changed": f"a change of “{event.get('field')}”",
        }.get(str(event.get("kind")), "an event")
        if event.get("step"):
            what += f" of step {event['step']}"
        return f"{what}, at most {duration_text(step.get('timeout'))}"
    if kind == "branch":
        count = len(step.get("conditions") or [])
        return f"{count} condition{'s' if count != 1 else ''}, then a fallback"
    if kind == "goto":
        return f"to step {step.get('target')}"
    if kind in ("list_add", "list_remove"):
        return f"“{pickers.name('lists', step.get('list_id'))}”"
    if kind == "segment_add":
        return f"“{pickers.name('segments', step.get('segment_id'))}”"
    if kind == "set_stage":
        return f"to “{pickers.name('stages', step.get('stage'))}”"
    if kind == "update_field":
        key = str(step.get("field") or "")
        label = wb.UPDATABLE_STANDARD.get(key) or pickers.name("fields", key)
        action = step.get("action") or "set"
        if action == "set":
            return f"set “{label}” to {wb.text_of(step.get('value'))}"
        if action == "increment":
            return f"add {wb.text_of(step.get('by', 1))} to “{label}”"
        return {"clear": "clear", "now": "stamp now in", "today": "stamp today in"}.get(
            str(action), str(action)
        ) + f" “{label}”"
    if kind == "webhook":
        return pickers.name("endpoints", step.get("endpoint_id"))
    if kind == "exit":
        return "the run ends here"
    shown = [
        f"{key}: {wb.text_of(value)}"
        for key, value in step.items()
        if key not in wb.STRUCTURAL and key != "name"
    ]
    return "; ".join(shown)


def presets(pickers: Pickers) -> list[tuple[str, str]]:
    """Ready-made branch conditions (a rule as JSON, and its words)."""
    found: list[tuple[str, str]] = []
    for list_id, name in pickers.lists:
        found.append((json.dumps({"list": list_id}), f"Is in the list “{name}”"))
    for key, label in pickers.stages:
        rule: dict[str, Any] = {"field": "journey_stage", "op": "in", "value": [key]}
        found.append((json.dumps(rule), f"Journey stage is “{label}”"))
    for kind in pickers.event_kinds:
        rule = {"event": {"kind": kind, "at_least": 1, "within_last_days": 30}}
        found.append((json.dumps(rule), f"Had the event “{kind}” in the last 30 days"))
    found.append((json.dumps({"suppressed": "email"}), "Is suppressed for email"))
    return found


def rule_text(rule: Any, pickers: Pickers) -> str:
    if not rule:
        return "(no rule yet)"
    return describe_rule(rule, dict(pickers.lists))


# --- the builder's state --------------------------------------------------------------------


@dataclass
class BuilderState:
    graph: wb.Graph
    dirty: bool = False
    menu: str = ""  # the slot whose "add a step" menu is open
    editing: str = ""  # a step id, or "new"
    new_type: str = ""
    slot: str = ""
    form_step: wb.Step | None = None
    form_faults: dict[str, str] = field(default_factory=dict)
    step_faults: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    valid: bool = False
    checked: bool = False
    # A branch form's condition editors as posted (rows or JSON), by condition index.
    conditions: dict[int, wc.ConditionEditor] = field(default_factory=dict)

    @property
    def graph_text(self) -> str:
        return wb.write_graph(self.graph)

    @property
    def tree(self) -> wb.Tree:
        return wb.build_tree(self.graph)

    @property
    def problems(self) -> int:
        return sum(len(v) for v in self.step_faults.values()) + len(self.general)


def _text(data: FormData, name: str) -> str:
    value = data.get(name, "")
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


def _slot(key: str) -> wb.Slot:
    after, _, rest = key.partition("|")
    owner, _, path = rest.partition("|")
    return wb.Slot(after=after, owner=owner, path=path)


def check(session: Session, tenant_id: uuid.UUID, state: BuilderState) -> None:
    """Validate the graph as activation would; problems go next to their steps."""
    state.checked = True
    state.step_faults, state.general = {}, []
    try:
        check_graph(session, tenant_id, state.graph)
        state.valid = True
    except ValidationFailed as exc:
        state.valid = False
        state.step_faults, state.general = wb.faults_by_step(state.graph, exc)


def _check_rules(
    session: Session,
    tenant_id: uuid.UUID,
    step: wb.Step,
    faults: dict[str, str],
    editors: dict[int, wc.ConditionEditor] | None = None,
) -> None:
    """A branch's rules through the segment compiler, each fault at its condition (and
    next to the row it points at, when the condition is edited as rows)."""
    if step.get("type") != "branch":
        return
    vocabulary = rule_vocabulary(session, tenant_id)
    for number, condition in enumerate(step.get("conditions") or []):
        name = f"conditions.{number}.rule"
        if name in faults:
            continue
        try:
            parse_rule(condition.get("rule"), vocabulary, now=utcnow(), pointer="rule")
        except ValidationFailed as exc:
            first = (exc.errors or [FieldError("rule", exc.detail)])[0]
            where = first.field.removeprefix("rule")
            faults[name] = f"{where.lstrip('/') + ': ' if where else ''}{first.message}"
            if editors is not None:
                wc.place_fault(editors.get(number), first.field, first.message)


def apply_action(
    session: Session, tenant_id: uuid.UUID, state: BuilderState, data: FormData
) -> None:
    """One builder button: open a menu or a form, save a step, delete or move one."""
    action = _text(data, "action")
    editing, new_type, slot = _text(data, "editing"), _text(data, "new_type"), _text(data, "slot")
    if action.startswith("add:"):
        state.menu = action.removeprefix("add:")
    elif action.startswith("new:"):
        new_type, _, slot = action.removeprefix("new:").partition(":")
        if new_type not in STEP_TYPES:
            raise ValidationFailed("choose a step type from the menu", field="action")
        state.editing, state.new_type, state.slot = "new", new_type, slot
        state.form_step = wb.blank_step(new_type, wb.new_id(state.graph, new_type))
    elif action.startswith("edit:"):
        step_id = action.removeprefix("edit:")
        _, step = wb._find(state.graph, step_id)
        state.editing, state.form_step = step_id, step
    elif action in ("save", "cond_add", "refresh") or action.startswith(
        ("cond_remove:", "cond_rows:", "cond_mode:")
    ):
        if not editing:
            return
        if editing == "new":
            step_type, step_id = new_type, _text(data, "step_id")
        else:
            _, old = wb._find(state.graph, editing)
            step_type, step_id = str(old.get("type")), editing
        posted = dict(data)
        for key in data:
            if key.startswith("preset.") and key.removeprefix("preset.").isdigit():
                chosen = _text(data, key)
                if chosen:
                    posted[f"f.conditions.{key.removeprefix('preset.')}.rule"] = chosen
        editors: dict[int, wc.ConditionEditor] = {}
        if step_type == "branch":
            vocab = segment_vocabulary(session, tenant_id)
            editors = wc.read_conditions(data, action, posted, vocab)
        step, faults = wb.step_from_form(posted, step_type, step_id)
        name = _text(data, "f.name").strip()
        if name:
            step["name"] = name[:200]
        if action == "refresh" or action.startswith(("cond_rows:", "cond_mode:")):
            faults = {}
        elif action == "cond_add":
            step.setdefault("conditions", []).append({"rule": {}, "next": ""})
            faults = {}
        elif action.startswith("cond_remove:"):
            number = action.removeprefix("cond_remove:")
            conditions = step.get("conditions") or []
            if number.isdigit() and int(number) < len(conditions) and len(conditions) > 1:
                del conditions[int(number)]
                editors = wc.remove(editors, int(number))
            faults = {}
        else:
            _check_rules(session, tenant_id, step, faults, editors)
        if action != "save" or faults:
            state.editing, state.new_type, state.slot = editing, new_type, slot
            state.form_step, state.form_faults = step, faults
            state.conditions = editors
            return
        if editing == "new":
            if step_type == "branch":
                for condition in step["conditions"]:
                    condition["next"] = ""
            state.graph = wb.insert_step(state.graph, _slot(slot), step)
        else:
            state.graph = wb.replace_step(state.graph, editing, step)
        state.dirty = True
    elif action.startswith("delete:"):
        state.graph = wb.delete_step(state.graph, action.removeprefix("delete:"))
        if not state.graph["steps"]:
            state.graph["steps"] = [{"id": "end-1", "type": "exit", "name": ""}]
        state.dirty = True
    elif action.startswith("up:") or action.startswith("down:"):
        direction, _, step_id = action.partition(":")
        state.graph = wb.move_step(state.graph, step_id, direction)
        state.dirty = True


def read_state(data: FormData) -> BuilderState:
    graph = wb.read_graph(_text(data, "graph"))
    return BuilderState(graph, dirty=_text(data, "dirty") == "1")


# --- page context ---------------------------------------------------------------------------------


def _counts(session: Session, tenant_id: uuid.UUID, workflow: Workflow) -> dict[str, Any]:
    counts = service.step_counts(session, tenant_id, workflow.id)
    emails = queries.email_stats(session, tenant_id, workflow.id)
    runs = counts.runs
    return {
        "current": counts.current,
        "processed": counts.processed,
        "emails": emails,
        "runs": runs,
        "enrolled": sum(runs.values()),
    }


_EMAIL_FIGURES = ("sent", "opened", "clicked")


def _counts_text(counts: dict[str, Any]) -> str:
    """The counts as the builder's hidden ``counts`` input carries them."""
    return json.dumps(
        {
            "current": counts["current"],
            "processed": counts["processed"],
            "runs": counts["runs"],
            "emails": {
                step: [stats.sent, stats.opened, stats.clicked]
                for step, stats in counts["emails"].items()
            },
        },
        separators=(",", ":"),
    )


def _counts_of(text: str) -> dict[str, Any] | None:
    """The counts the page was drawn with, read back from the builder's form; None
    when they are missing or malformed (then they are counted again)."""

    def numbers(value: Any) -> dict[str, int]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and type(n) is int and n >= 0 for k, n in value.items()
        ):
            raise ValueError("not a count by name")
        return value

    try:
        data = json.loads(text) if text else None
        if not isinstance(data, dict) or not isinstance(data.get("emails"), dict):
            return None
        emails = {}
        for step, figures in data["emails"].items():
            if not isinstance(figures, list):
                return None
            named = dict(zip(_EMAIL_FIGURES, figures, strict=True))  # ValueError if not 3
            emails[step] = queries.EmailStats(**numbers(named))
        runs = numbers(data.get("runs"))
        return {
            "current": numbers(data.get("current")),
            "processed": numbers(data.get("processed")),
            "emails": emails,
            "runs": runs,
            "enrolled": sum(runs.values()),
        }
    except (ValueError, TypeError, RecursionError):  # JSONDecodeError is a ValueError
        return None


def _editable(console: Console, workflow: Workflow) -> bool:
    return console.can(WRITE) and workflow.status != WorkflowStatus.ARCHIVED


def builder_context(
    console: Console,
    session: Session,
    workflow: Workflow,
    state: BuilderState,
    counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the builder is drawn with. ``counts``: those the page was drawn with
    (carried by its form), else counted now."""
    tenant_id = console.principal.tenant_id
    counts = counts or _counts(session, tenant_id, workflow)
    if not state.checked:
        check(session, tenant_id, state)
    pickers = load_pickers(session, tenant_id)
    editors: list[wc.ConditionEditor] = []
    vocab = None
    if state.form_step is not None and state.form_step.get("type") == "branch":
        vocab = segment_vocabulary(session, tenant_id)
        editors = wc.editors_for(state.form_step, state.conditions, vocab)
        wc.count_rows(session, console.principal.keys, editors, vocab)
    return {
        "cond_editors": editors,
        "svocab": vocab,
        "workflow": workflow,
        "state": state,
        "pickers": pickers,
        "counts": counts,
        "counts_text": _counts_text(counts),
        "editable": _editable(console, workflow),
        "step_types": wb.step_types(),
        "presets": presets(pickers),
        "describe": describe_step,
        "rule_text": rule_text,
        "duration_text": duration_text,
        "wb": wb,
        "live": workflow.status in (WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED),
    }


def _page_context(console: Console, session: Session, workflow: Workflow) -> dict[str, Any]:
    # The trigger page's module imports this one (pickers): imported here, not at the top.
    from carepost.web.workflow_triggers import describe_trigger

    tenant_id = console.principal.tenant_id
    trigger = entry.get_trigger(session, tenant_id, workflow.id)
    return {
        "title": workflow.name,
        "audiences": _audiences(session, tenant_id),
        "trigger_text": describe_trigger(trigger, load_pickers(session, tenant_id)),
    }


def _audiences(session: Session, tenant_id: uuid.UUID) -> list[tuple[str, str]]:
    found = [
        (f"list:{r.id}", f"List: {r.name}")
        for r in contact_lists.list_lists(session, tenant_id, after=None, limit=CHOICES_LIMIT)
    ]
    found += [
        (f"segment:{r.id}", f"Segment: {r.name}")
        for r in segments.list_segments(session, tenant_id, after=None, limit=CHOICES_LIMIT)
    ]
    return found


def render_workflow(
    console: Console,
    workflow_id: uuid.UUID,
    *,
    state: BuilderState | None = None,
    status: int = 200,
    notice: str = "",
    error: str = "",
    partial: bool = False,
    simulation: dict[str, Any] | None = None,
    enroll_error: str = "",
    counts: dict[str, Any] | None = None,
) -> Response:
    with console.session() as session:
        workflow = service.get_workflow(session, console.principal.tenant_id, workflow_id)
        state = state or BuilderState(workflow.draft)
        context = builder_context(console, session, workflow, state, counts)
        if partial:
            return console.render("workflows/_builder.html", status=status, **context)
        context.update(_page_context(console, session, workflow))
    return console.render(
        "workflows/detail.html",
        status=status,
        notice=notice or notice_for(console.request, NOTICES) or enrolled_notice(console),
        error=error,
        simulation=simulation,
        enroll_error=enroll_error,
        **context,
    )


# --- the list and a new workflow ----------------------------------------------------------------


@router.get("/workflows")
def workflows_page(console: Annotated[Console, Depends(page(READ))]) -> Response:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        rows = service.list_workflows(session, tenant_id, after=None, limit=CHOICES_LIMIT)
        rows.sort(key=lambda w: (w.status == WorkflowStatus.ARCHIVED, w.name.lower()))
        counts = queries.run_counts(session, tenant_id, [w.id for w in rows])
    items = [
        {
            "workflow": w,
            "enrolled": sum(counts[w.id].values()),
            "in_flight": sum(counts[w.id].get(s, 0) for s in IN_FLIGHT),
            "completed": counts[w.id].get("completed", 0),
            "exited": counts[w.id].get("exited", 0),
        }
        for w in rows
    ]
    return console.render(
        "workflows/list.html",
        title="Workflows",
        items=items,
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/workflows/new")
def new_workflow(console: Annotated[Console, Depends(page(WRITE))]) -> Response:
    return console.render(
        "workflows/new.html", title="New workflow", form=SETTINGS_FORM.bind(None, priority="normal")
    )


def _settings(form: Any) -> dict[str, Any]:
    priority = form.value("priority") or "normal"
    if priority not in ("normal", "high", "bulk"):
        raise ValidationFailed("choose a priority", field="priority")
    return {
        "name": form.value("name").strip(),
        "sender_name": form.value("sender_name").strip(),
        "sender_address": form.value("sender_address").strip(),
        "reply_to": form.value("reply_to").strip() or None,
        "priority": priority,
    }


@router.post("/workflows")
def create_workflow(
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = SETTINGS_FORM.bind(data)
    try:
        form.validate()
        with console.session() as session:
            row = service.create_workflow(
                session,
                console.principal.tenant_id,
                **_settings(form),
                draft={"steps": [{"id": "end-1", "type": "exit", "name": ""}]},
                actor=console.principal.actor,
            )
            workflow_id = row.id
    except CarepostError as exc:
        form.failed(exc)
        return console.render(
            "workflows/new.html", status=exc.status, title="New workflow", form=form
        )
    return redirect(console.request, f"/workflows/{workflow_id}?done=created")


# --- one workflow ---------------------------------------------------------------------


@router.get("/workflows/{workflow_id}")
def workflow_page(workflow_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    return render_workflow(console, parse_id(workflow_id))


def _load(console: Console, workflow_id: str) -> uuid.UUID:
    """The workflow's id once it is known to be this organization's (else 404)."""
    the_id = parse_id(workflow_id)
    with console.session() as session:
        service.get_workflow(session, console.principal.tenant_id, the_id)
    return the_id


@router.post("/workflows/{workflow_id}/builder")
def builder_fragment(
    workflow_id: str,
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """The builder re-rendered after one change (HTMX), or the whole page without it.

    An edit changes no run, so the HTMX response shows the counts the page was drawn
    with (carried by the form) instead of counting again: at a million runs the
    grouped counts take seconds, and a marketer clicks many times while building."""
    the_id = _load(console, workflow_id)
    try:
        state = read_state(data)
        with console.session() as session:
            apply_action(session, console.principal.tenant_id, state, data)
    except ValidationFailed as exc:
        if console.htmx:
            return alert_response(console, sentence(exc.detail), status=422)
        return render_workflow(console, the_id, status=422, error=exc.detail)
    counts = _counts_of(_text(data, "counts")) if console.htmx else None
    return render_workflow(console, the_id, state=state, partial=console.htmx, counts=counts)


@router.post("/workflows/{workflow_id}/draft")
def save_draft(
    workflow_id: str,
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """Store the graph of a draft (any well-formed state; checked at activation)."""
    the_id = _load(console, workflow_id)
    try:
        state = read_state(data)
    except ValidationFailed as exc:
        return render_workflow(console, the_id, status=422, error=exc.detail)
    try:
        with console.session() as session:
            workflow = service.get_workflow(session, console.principal.tenant_id, the_id)
            if workflow.status != WorkflowStatus.DRAFT:
                raise ValidationFailed(
                    "this workflow is live: review and publish the changes instead"
                )
            service.update_workflow(
                session,
                console.principal.tenant_id,
                the_id,
                changes={"draft": state.graph},
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        if exc.status in (403, 404) or exc.status >= 500:
            raise
        state.dirty = True
        return render_workflow(console, the_id, state=state, status=exc.status, error=exc.detail)
    return redirect(console.request, f"/workflows/{the_id}?done=saved")


@router.post("/workflows/{workflow_id}/review")
def review_publish(
    workflow_id: str,
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """What publishing the edited graph would do, before anything is published."""
    the_id = _load(console, workflow_id)
    try:
        state = read_state(data)
    except ValidationFailed as exc:
        return render_workflow(console, the_id, status=422, error=exc.detail)
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        workflow = service.get_workflow(session, tenant_id, the_id)
        if workflow.status not in (WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED):
            error = "only an active or paused workflow publishes versions: save the draft"
            return render_workflow(console, the_id, state=state, status=409, error=error)
        try:
            plan = service.preview_publish(session, tenant_id, the_id, state.graph)
        except ValidationFailed as exc:
            state.dirty = True
            state.checked = True
            state.step_faults, state.general = wb.faults_by_step(state.graph, exc)
            return render_workflow(console, the_id, state=state, status=422, error=f"{exc.detail}")
        current = service.version_graph(session, the_id, workflow.current_version)
        diff = queries.diff_graphs(
            {"steps": [s.model_dump(mode="json") for s in current.steps]}, state.graph
        )
        names = {str(s.get("id")): s.get("name") or "" for s in state.graph["steps"]}
        return console.render(
            "workflows/review.html",
            title=f"Publish {workflow.name}",
            workflow=workflow,
            plan=plan,
            diff=diff,
            names=names,
            graph_text=state.graph_text,
        )


@router.post("/workflows/{workflow_id}/publish")
def publish(
    workflow_id: str,
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    the_id = _load(console, workflow_id)
    try:
        state = read_state(data)
    except ValidationFailed as exc:
        return render_workflow(console, the_id, status=422, error=exc.detail)
    try:
        with console.session() as session:
            workflow = service.get_workflow(session, console.principal.tenant_id, the_id)
            if workflow.status not in (WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED):
                raise ValidationFailed("only an active or paused workflow publishes versions")
            service.update_workflow(
                session,
                console.principal.tenant_id,
                the_id,
                changes={"draft": state.graph},
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        if exc.status in (403, 404) or exc.status >= 500:
            raise
        state.dirty = True
        if isinstance(exc, ValidationFailed) and exc.errors:
            state.checked = True
            state.step_faults, state.general = wb.faults_by_step(state.graph, exc)
        return render_workflow(console, the_id, state=state, status=exc.status, error=exc.detail)
    return redirect(console.request, f"/workflows/{the_id}?done=published")


@router.post("/workflows/{workflow_id}/settings")
def save_settings(
    workflow_id: str,
    console: Annotated[Console, Depends(page(WRITE))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    the_id = _load(console, workflow_id)
    form = SETTINGS_FORM.bind(data)
    try:
        form.validate()
        with console.session() as session:
            service.update_workflow(
                session,
                console.principal.tenant_id,
                the_id,
                changes=_settings(form),
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        if exc.status in (403, 404) or exc.status >= 500:
            raise
        form.failed(exc)
        message = "; ".join([*form.summary, *form.errors.values()]) or exc.detail
        return render_workflow(console, the_id, status=exc.status, error=message)
    return redirect(console.request, f"/workflows/{the_id}?done=settings")


def _add_status(action: str, done: str) -> None:
    """``POST /workflows/{id}/<action>``; activate saves the posted graph first."""

    def route(
        workflow_id: str,
        console: Annotated[Console, Depends(page(WRITE))],
        data: Annotated[FormData, Depends(form_data)],
    ) -> Response:
        the_id = _load(console, workflow_id)
        state: BuilderState | None = None
        try:
            if action == "activate" and _text(data, "graph"):
                state = read_state(data)
            with console.session() as session:
                tenant_id = console.principal.tenant_id
                workflow = service.get_workflow(session, tenant_id, the_id)
                if state is not None and workflow.status == WorkflowStatus.DRAFT:
                    service.update_workflow(
                        session,
                        tenant_id,
                        the_id,
                        changes={"draft": state.graph},
                        actor=console.principal.actor,
                    )
                service.change_status(
                    session, tenant_id, the_id, action, actor=console.principal.actor
                )
        except CarepostError as exc:
            if exc.status in (403, 404) or exc.status >= 500:
                raise
            if state is not None and isinstance(exc, ValidationFailed) and exc.errors:
                state.dirty = True
                state.checked = True
                state.step_faults, state.general = wb.faults_by_step(state.graph, exc)
                if not state.step_faults and not state.general:
                    state.general = [e.message for e in exc.errors]
            message = exc.detail
            if isinstance(exc, ValidationFailed) and exc.errors and not exc.detail:
                message = exc.errors[0].message
            return render_workflow(console, the_id, state=state, status=exc.status, error=message)
        return redirect(console.request, f"/workflows/{the_id}?done={done}")

    route.__name__ = f"{action}_workflow_page"
    router.add_api_route(f"/workflows/{{workflow_id}}/{action}", route, methods=["POST"])


_add_status("activate", "activated")
_add_status("pause", "paused")
_add_status("resume", "resumed")
_add_status("archive", "archived")


# --- enrolling and simulating ---------------------------------------------------------------------


@router.post("/workflows/{workflow_id}/enroll")
def enroll(
    workflow_id: str,
    console: Annotated[Console, Depends(page(ENROLL))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    the_id = _load(console, workflow_id)
    kind, _, raw = _text(data, "audience").partition(":")
    try:
        try:
            audience = uuid.UUID(raw)
        except ValueError:
            raise ValidationFailed("choose a list or a segment", field="audience") from None
        with console.session() as session:
            if kind == "list":
                outcome = triggers.enroll_list(
                    session,
                    console.principal.tenant_id,
                    the_id,
                    audience,
                    actor=console.principal.actor,
                )
            elif kind == "segment":
                outcome = triggers.enroll_segment(
                    session, console.principal.keys, the_id, audience, actor=console.principal.actor
                )
            else:
                raise ValidationFailed("choose a list or a segment", field="audience")
    except CarepostError as exc:
        if exc.status == 403 or exc.status >= 500:
            raise
        if isinstance(exc, NotFound) and "workflow" in exc.detail:
            raise
        return render_workflow(console, the_id, status=exc.status, enroll_error=exc.detail)
    # Post/redirect/get: a reload of the page does not enroll again.
    return redirect(
        console.request,
        f"/workflows/{the_id}?done=enrolled&enrolled={outcome.enrolled}&skipped={outcome.skipped}",
    )


def enrolled_notice(console: Console) -> str:
    """The enrollment's outcome after its redirect: two whole numbers from the URL, the
    words from here (never text from the URL)."""
    params = console.request.query_params
    if params.get("done") != "enrolled":
        return ""
    numbers = [params.get(k, "") for k in ("enrolled", "skipped")]
    if not all(n.isdigit() and len(n) < 10 for n in numbers):
        return ""
    enrolled, skipped = (int(n) for n in numbers)
    return (
        f"Enrolled {enrolled:,} contact{'s' if enrolled != 1 else ''}; "
        f"{skipped:,} skipped (already in this workflow, or once through it)."
    )


@dataclass
class SimulatedView:
    contact_id: uuid.UUID
    contact_name: str
    rows: list[dict[str, Any]]
    hidden: int
    ends: str
    revealed: bool
    start_at: str
    events: list[str]


def _run_simulation(
    console: Console, workflow_id: uuid.UUID, data: FormData, *, reveal: bool
) -> dict[str, Any]:
    raw_contact = _text(data, "contact_id").strip()
    events = [e for e in _many(data, "events") if e]
    start_text = _text(data, "start_at").strip()
    values = {"contact_id": raw_contact, "start_at": start_text, "events": events}
    try:
        contact_id = uuid.UUID(raw_contact)
    except ValueError:
        return {"error": "enter the id of a contact (from its page)", **values}
    start = None
    if start_text:
        try:
            start = datetime.fromisoformat(start_text).replace(tzinfo=UTC)
        except ValueError:
            return {"error": "enter the start as a date and time", **values}
    limits = SendLimits.from_settings(console.runtime.settings)
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        try:
            result = simulate(
                session,
                console.principal.keys,
                workflow_id,
                contact_id,
                events=frozenset(events),
                now=start,
                limits=limits,
            )
        except NotFound as exc:
            if "workflow" in exc.detail:
                raise
            return {"error": "no such contact", **values}
        except CarepostError as exc:
            return {"error": exc.detail, **values}
        graph = service.get_workflow(session, tenant_id, workflow_id).draft
        names = {str(s.get("id")): s.get("name") or "" for s in graph.get("steps", [])}
        name = MASK
        if reveal:
            contact = contacts.get_contact(session, tenant_id, contact_id, with_phi=True)
            name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or "—"
            contacts.record_phi_view(
                session,
                tenant_id=tenant_id,
                actor=console.principal.actor,
                contacts=[contact],
                via="workflow_simulation",
            )
    rows: list[dict[str, Any]] = []
    hidden = 0
    for simulated in result.path:
        if hidden or (not reveal and rows and rows[-1]["type"] in DATA_DEPENDENT):
            hidden += 1
            continue
        masked = not reveal and simulated.type in DATA_DEPENDENT
        rows.append(
            {
                "step_id": simulated.step_id,
                "name": names.get(simulated.step_id, ""),
                "type": simulated.type,
                "label": wb.label_of(simulated.type),
                "at": MASK if masked else simulated.at.strftime("%Y-%m-%d %H:%M UTC"),
                "outcome": MASK if masked else simulated.outcome,
            }
        )
    view = SimulatedView(
        contact_id,
        name,
        rows,
        hidden,
        result.ends if (reveal or not hidden) else MASK,
        reveal,
        start_text,
        events,
    )
    return {"result": view, **values}


def _many(data: FormData, name: str) -> list[str]:
    value = data.get(name, [])
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]


@router.post("/workflows/{workflow_id}/simulate")
def simulate_page(
    workflow_id: str,
    console: Annotated[Console, Depends(page(READ))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """A dry run of the draft for a sample contact (PHI-dependent steps masked)."""
    the_id = _load(console, workflow_id)
    simulation = _run_simulation(console, the_id, data, reveal=False)
    return _simulation_response(console, the_id, simulation)


@router.post("/workflows/{workflow_id}/simulate/reveal")
def simulate_revealed(
    workflow_id: str,
    console: Annotated[Console, Depends(page(PHI))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """The whole dry run with the contact's name: audited as a view of its PHI."""
    console.principal.require(READ)
    console.principal.require("contacts:read")
    the_id = _load(console, workflow_id)
    simulation = _run_simulation(console, the_id, data, reveal=True)
    return _simulation_response(console, the_id, simulation)


def _simulation_response(
    console: Console, workflow_id: uuid.UUID, simulation: dict[str, Any]
) -> Response:
    status = 422 if simulation.get("error") else 200
    if console.htmx:
        with console.session() as session:
            workflow = service.get_workflow(session, console.principal.tenant_id, workflow_id)
        return console.render(
            "workflows/_simulation.html", status=status, workflow=workflow, simulation=simulation
        )
    return render_workflow(console, workflow_id, status=status, simulation=simulation)


# --- versions ------------------------------------------------------------------------------------


@router.get("/workflows/{workflow_id}/versions")
def versions_page(workflow_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        workflow = service.get_workflow(session, tenant_id, parse_id(workflow_id))
        history = queries.version_history(session, tenant_id, workflow.id)
    return console.render(
        "workflows/versions.html",
        title=f"Versions of {workflow.name}",
        workflow=workflow,
        history=history,
    )


@router.get("/workflows/{workflow_id}/versions/{version}")
def version_page(
    workflow_id: str, version: str, console: Annotated[Console, Depends(page(READ))]
) -> Response:
    if not version.isdigit() or len(version) > 9:
        raise NotFound("no such version")
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        workflow = service.get_workflow(session, tenant_id, parse_id(workflow_id))
        row = queries.get_version(session, tenant_id, workflow.id, int(version))
        state = BuilderState(row.graph, checked=True, valid=True)
        context = builder_context(console, session, workflow, state)
        context["editable"] = False
        context["show_counts"] = False
    return console.render(
        "workflows/version.html",
        title=f"{workflow.name}, version {row.version}",
        version=row,
        **context,
    )


# --- runs ----------------------------------------------------------------------------------------


RUNS_PAGE = 100


@router.get("/workflows/{workflow_id}/runs")
def runs_page(workflow_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    params = console.request.query_params
    status = params.get("status") or None
    if status not in (None, "active", "waiting", "completed", "exited"):
        status = None
    after = None
    if params.get("after"):
        try:
            after = uuid.UUID(params["after"])
        except ValueError:
            after = None
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        workflow = service.get_workflow(session, tenant_id, parse_id(workflow_id))
        runs = service.list_runs(
            session, tenant_id, workflow.id, status=status, after=after, limit=RUNS_PAGE + 1
        )
    more = len(runs) > RUNS_PAGE
    runs = runs[:RUNS_PAGE]
    return console.render(
        "workflows/runs.html",
        title=f"Contacts in {workflow.name}",
        workflow=workflow,
        runs=runs,
        status_filter=status or "",
        more=str(runs[-1].id) if more and runs else "",
    )


@router.get("/workflows/{workflow_id}/runs/{contact_id}")
def run_page(
    workflow_id: str, contact_id: str, console: Annotated[Console, Depends(page(READ))]
) -> Response:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        workflow = service.get_workflow(session, tenant_id, parse_id(workflow_id))
        run = service.get_run(session, tenant_id, workflow.id, parse_id(contact_id))
        history = service.run_history(session, run)
        others = queries.contact_runs(session, tenant_id, run.contact_id)
    return console.render(
        "workflows/run.html",
        title=f"Contact {str(run.contact_id)[:8]} in {workflow.name}",
        workflow=workflow,
        run=run,
        history=history,
        others=[(w, r) for w, r in others if w.id != workflow.id],
        label_of=wb.label_of,
    )


def graph_json(graph: wb.Graph) -> str:
    return json.dumps(graph, indent=2)


# --- a contact's workflows (on the contact's page) -------------------------------------------

CONTACT_HISTORY = 20


@router.get("/workflows/contacts/{contact_id}")
def contact_workflows(
    contact_id: str, console: Annotated[Console, Depends(page(READ))]
) -> Response:
    """Every workflow run of a contact with its latest steps: the panel the contact's page
    loads (HTMX), or a page of its own without JavaScript. Ids and codes, no PHI."""
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        contact = contacts.get_contact(session, tenant_id, parse_id(contact_id), with_phi=False)
        runs = [
            (workflow, run, service.run_history(session, run)[-CONTACT_HISTORY:])
            for workflow, run in queries.contact_runs(session, tenant_id, contact.id)
        ]
    context: dict[str, Any] = {"contact_id": contact.id, "runs": runs, "label_of": wb.label_of}
    if console.htmx:
        return console.render("workflows/_contact_runs.html", **context)
    return console.render(
        "workflows/contact_runs.html",
        title=f"Workflows of contact {str(contact.id)[:8]}",
        **context,
    )
