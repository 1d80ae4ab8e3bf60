"""The segment builder: saved segments, a visual rule builder with a live count, and
an "Advanced (JSON)" editor that round-trips with it.

The builder is one form (:mod:`carepost.web.segments_builder`). Every change posts the
whole form to ``/segments/builder`` (HTMX), which converts it to the rule JSON, checks
it with the real parser (:func:`carepost.segments.service.count_rule`), shows each
fault next to the row it points into, and the count of contacts the rule selects now.
A count discloses no PHI (an aggregate, as the API's preview), so analysts may build
and count; saving needs ``contacts:write``, like the API.

``/segments/preview`` keeps the plain JSON preview (the API's twin for a rule typed as
text). The detail page (members, export, snapshots) is :mod:`carepost.web.segments_detail`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.consent.service import purposes
from carepost.contacts import lists as contact_lists
from carepost.contacts.activity_models import EventKind
from carepost.contacts.custom_fields import list_fields, spec_of
from carepost.contacts.events import BUILT_IN_KINDS
from carepost.contacts.stages import stage_keys
from carepost.contacts.values import FieldSpec
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.segments import service as segments
from carepost.segments.rules import CHANNELS, CONSENT_STATUSES, SUPPRESSION_CHANNELS
from carepost.web import segments_builder as sb
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import FormData
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

MAX_RULE_CHARACTERS = 100_000
SAVE_TARGET = re.compile(
    r"/segments(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?"
)
NOTICES = {"deleted": "Segment deleted."}

SEGMENT_TABLE = Table(
    caption="Saved segments",
    id="segment",
    row_id=lambda s: str(s.id),
    empty="No segments yet.",
    extra={"cards": True},
    columns=(
        Column("Name", lambda s: s.name, link=lambda s: f"/segments/{s.id}"),
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


# --- what the builder offers ------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The tenant's names the builder's selects offer (labels for people, keys for rules)."""

    fields: list[tuple[str, str]]  # (key, label), custom fields then standard ones
    specs: dict[str, FieldSpec]
    lists: list[tuple[str, str]]  # (id, name)
    event_kinds: list[str]
    purposes: tuple[str, ...]
    stages: list[str]
    channels: tuple[str, ...] = CHANNELS
    statuses: tuple[str, ...] = CONSENT_STATUSES
    suppression: tuple[str, ...] = SUPPRESSION_CHANNELS
    kinds: tuple[tuple[str, str], ...] = sb.KINDS
    op_labels: dict[str, str] = field(default_factory=lambda: dict(sb.OP_LABELS))

    def ops(self, key: str) -> tuple[str, ...]:
        return sb.ops_for(key, self.specs)

    def type_of(self, key: str) -> str:
        kind = sb.field_type(key, self.specs)
        return kind.value if kind is not None else ""

    def choices(self, key: str) -> tuple[str, ...]:
        spec = self.specs.get(key)
        return spec.choices if spec is not None else ()


def load_vocabulary(session: Session, tenant_id: uuid.UUID) -> Vocabulary:
    custom = list_fields(session, tenant_id)
    standard = [(key, label) for key, (label, _ops) in sb.STANDARD.items()]
    kinds = session.scalars(
        select(EventKind.key).where(EventKind.tenant_id == tenant_id).order_by(EventKind.key)
    ).all()
    rows = contact_lists.list_lists(session, tenant_id, after=None, limit=500)
    return Vocabulary(
        fields=[(row.key, f"{row.label} ({row.key})") for row in custom] + standard,
        specs={row.key: spec_of(row) for row in custom},
        lists=[(str(row.id), row.name) for row in rows],
        # The organization's recorded kinds first, then the email kinds it has not
        # recorded yet: those exist for every organization.
        event_kinds=[*kinds, *(kind for kind in BUILT_IN_KINDS if kind not in kinds)],
        purposes=purposes(session, tenant_id),
        stages=sorted(stage_keys(session, tenant_id)),
    )


# --- the builder's state ------------------------------------------------------------------


@dataclass
class BuilderState:
    """Everything the builder shows: rows (or only JSON), the rule, its faults, the count."""

    builder: sb.Builder
    rule_text: str
    mode: str = "visual"
    fits: bool = True
    count: int | None = None
    general: list[str] = field(default_factory=list)
    row_faults: dict[int, list[str]] = field(default_factory=dict)
    name: str = ""
    description: str = ""


def _default_builder() -> sb.Builder:
    return sb.Builder(items=[sb.Row(1)])


def _fill_defaults(builder: sb.Builder, vocab: Vocabulary) -> None:
    """A new row names the first field, list and event kind, so it is a rule at once."""
    for row in builder.rows():
        if row.kind == "field" and not row.field and vocab.fields:
            row.field = vocab.fields[0][0]
        if row.kind == "list" and not row.list_id and vocab.lists:
            row.list_id = vocab.lists[0][0]
        if row.kind == "event" and not row.event_kind and not row.campaign and vocab.event_kinds:
            row.event_kind = vocab.event_kinds[0]
        if row.kind == "stage" and not row.values and vocab.stages:
            row.values = [vocab.stages[0]]


def state_from_form(data: FormData, vocab: Vocabulary) -> tuple[BuilderState, Any]:
    """Read the posted builder (visual rows, or the JSON tab) into a state and its rule.

    ``action`` (a button) adds or removes rows, or switches tab. In the JSON tab the
    text is the truth; switching back to the visual tab takes it into rows when it fits.
    """
    action = _text(data, "action")
    mode = _text(data, "mode") or "visual"
    wanted = action.removeprefix("mode:") if action in ("mode:visual", "mode:json") else mode
    name, description = _text(data, "name"), _text(data, "description")
    if mode == "json":
        text = _text(data, "rule")
        try:
            rule = read_rule(text)
        except ValidationFailed as exc:
            state = BuilderState(_default_builder(), text, mode="json", fits=False)
            state.general = rule_faults(exc)
            state.name, state.description = name, description
            return state, None
        builder = sb.from_rule(rule)
        if wanted == "visual" and builder is not None:
            state = BuilderState(builder, text, mode="visual")
            rule = sb.to_rule(builder, vocab.specs)
        else:
            state = BuilderState(builder or _default_builder(), text, mode="json")
            state.fits = builder is not None
            if wanted == "visual":
                state.general.append(
                    "This rule does not fit the visual builder (it nests deeper, or names "
                    "several event kinds in one condition): edit it as JSON."
                )
        state.name, state.description = name, description
        return state, rule
    builder = sb.apply_action(sb.read_form(data), action)
    _fill_defaults(builder, vocab)
    rule = sb.to_rule(builder, vocab.specs)
    state = BuilderState(builder, json.dumps(rule, indent=2), mode=wanted)
    state.name, state.description = name, description
    return state, rule


def state_from_rule(rule: Any, vocab: Vocabulary) -> BuilderState:
    builder = sb.from_rule(rule)
    text = json.dumps(rule, indent=2)
    if builder is None:
        return BuilderState(_default_builder(), text, mode="json", fits=False)
    sb.to_rule(builder, vocab.specs)  # sets each row's pointer
    return BuilderState(builder, text)


def place_faults(state: BuilderState, exc: ValidationFailed) -> None:
    """Put each fault next to its row (by pointer), the rest above the rows."""
    for error in exc.errors or [FieldError("rule", exc.detail)]:
        target = state.builder.row_for(error.field) if state.mode == "visual" else None
        if target is None:
            where = f"{error.field}: " if error.field.startswith("rule/") else ""
            message = error.message
            if error.field in ("rule/all", "rule/any") and "non-empty" in message:
                message = "add a condition"
                where = ""
            state.general.append(where + message)
        else:
            state.row_faults.setdefault(target.id, []).append(error.message)


def evaluate(console: Console, session: Session, state: BuilderState, rule: Any) -> None:
    """The live count, or the faults (the real parser decides)."""
    if rule is None:
        return
    try:
        state.count = segments.count_rule(session, console.principal.keys, rule)
    except ValidationFailed as exc:
        place_faults(state, exc)


def _text(data: FormData, name: str) -> str:
    value = data.get(name, "")
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


def render_builder(
    console: Console,
    state: BuilderState,
    vocab: Vocabulary,
    *,
    action: str,
    heading: str,
    status: int = 200,
    name_error: str = "",
    cancel: str = "/segments",
) -> Response:
    context: dict[str, Any] = {
        "state": state,
        "vocab": vocab,
        "action": action,
        "name_error": name_error,
    }
    if console.htmx and action == "":
        return console.render("segments/_builder.html", status=status, **context)
    return console.render(
        "segments/builder.html",
        status=status,
        title=heading,
        heading=heading,
        cancel=cancel,
        **context,
    )


# --- routes -----------------------------------------------------------------------------------


@router.get("/segments")
def segments_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    with console.session() as session:
        rows = segments.list_segments(session, console.principal.tenant_id, after=None, limit=500)
    return console.render(
        "segments/list.html",
        title="Segments",
        table=SEGMENT_TABLE,
        rows=rows,
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/segments/new")
def new_segment(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    with console.session() as session:
        vocab = load_vocabulary(session, console.principal.tenant_id)
        builder = _default_builder()
        _fill_defaults(builder, vocab)
        rule = sb.to_rule(builder, vocab.specs)
        state = BuilderState(builder, json.dumps(rule, indent=2))
    # No count yet: the first row has no value, and a fault before any input is noise.
    heading = "New segment" if console.can("contacts:write") else "Count contacts"
    return render_builder(console, state, vocab, action="/segments", heading=heading)


@router.post("/segments/builder")
def builder_fragment(
    console: Annotated[Console, Depends(page("contacts:read"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """The builder re-rendered from the posted form: rows, faults at their rows, count."""
    with console.session() as session:
        vocab = load_vocabulary(session, console.principal.tenant_id)
        state, rule = state_from_form(data, vocab)
        evaluate(console, session, state, rule)
    if console.htmx:
        return render_builder(console, state, vocab, action="", heading="Segment builder")
    # Without JavaScript the buttons post the whole page here: keep where it saves to.
    target = _text(data, "target")
    action = target if SAVE_TARGET.fullmatch(target) else "/segments"
    heading = "New segment" if action == "/segments" else "Edit segment"
    return render_builder(console, state, vocab, action=action, heading=heading)


@router.post("/segments/preview")
def preview(
    console: Annotated[Console, Depends(page("contacts:read"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    text = _text(data, "rule")
    context: dict[str, Any] = {"count": None, "faults": []}
    try:
        rule = read_rule(text)
        with console.session() as session:
            context["count"] = segments.count_rule(session, console.principal.keys, rule)
    except ValidationFailed as exc:
        context["faults"] = rule_faults(exc)
    return console.render("segments/_count.html", **context)


def _name_fault(name: str) -> str:
    if not name:
        return "enter a name"
    if has_forbidden_characters(name) or len(name) > 200:
        return "use one line of at most 200 characters, without control characters"
    return ""


def _save(
    console: Console, data: FormData, segment_id: uuid.UUID | None
) -> tuple[Response | None, uuid.UUID | None]:
    """Create or update from the posted builder; the builder again (422/409) on a fault."""
    action = "/segments" if segment_id is None else f"/segments/{segment_id}"
    heading = "New segment" if segment_id is None else "Edit segment"
    with console.session() as session:
        vocab = load_vocabulary(session, console.principal.tenant_id)
        state, rule = state_from_form(data, vocab)
        name = state.name.strip()
        name_error = _name_fault(name)
        try:
            if rule is None:
                raise ValidationFailed("the rule is not valid JSON", field="rule")
            if name_error:
                segments.parse_for(session, console.principal.tenant_id, rule)
                raise ValidationFailed(name_error, field="name")
            description = state.description.strip()[:2000]
            if segment_id is None:
                row = segments.create_segment(
                    session,
                    console.principal.tenant_id,
                    name=name,
                    description=description,
                    rule=rule,
                    actor=console.principal.actor,
                )
                segment_id = row.id
            else:
                segments.update_segment(
                    session,
                    console.principal.tenant_id,
                    segment_id,
                    changes={"name": name, "description": description, "rule": rule},
                    actor=console.principal.actor,
                )
            return None, segment_id
        except ValidationFailed as exc:
            status = exc.status
            if any(e.field == "name" for e in exc.errors):
                name_error = exc.errors[0].message
            elif rule is not None:
                place_faults(state, exc)
        except CarepostError as exc:
            status = exc.status
            name_error = exc.detail
    return (
        render_builder(
            console,
            state,
            vocab,
            action=action,
            heading=heading,
            status=status,
            name_error=name_error,
        ),
        None,
    )


@router.post("/segments")
def create_segment(
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    failed, segment_id = _save(console, data, None)
    if failed is not None:
        return failed
    return redirect(console.request, f"/segments/{segment_id}?done=created")


@router.get("/segments/{segment_id}/edit")
def edit_segment(
    segment_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        row = segments.get_segment(session, console.principal.tenant_id, parse_id(segment_id))
        vocab = load_vocabulary(session, console.principal.tenant_id)
        state = state_from_rule(row.rule, vocab)
        state.name, state.description = row.name, row.description or ""
        evaluate(console, session, state, row.rule)
    return render_builder(
        console,
        state,
        vocab,
        action=f"/segments/{row.id}",
        heading=f"Edit {row.name}",
        cancel=f"/segments/{row.id}",
    )


@router.post("/segments/{segment_id}")
def update_segment(
    segment_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = parse_id(segment_id)
    with console.session() as session:
        segments.get_segment(session, console.principal.tenant_id, target)  # 404 first
    failed, _ = _save(console, data, target)
    if failed is not None:
        return failed
    return redirect(console.request, f"/segments/{target}?done=updated")


# The detail routes (/segments/{id}/…) come after /segments/new and /segments/builder.
from carepost.web import segments_detail  # noqa: E402

router.include_router(segments_detail.router)
