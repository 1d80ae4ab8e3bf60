"""The console's email templates: a list, and an editor with a live preview.

The editor is one form. Every change (debounced by HTMX: ``input delay:400ms``)
posts the whole form to ``/templates/render``, which renders the draft in the sandbox
(:func:`carepost.templates.service.preview`) and answers the preview fragment: the
subject, the HTML part in a sandboxed ``<iframe srcdoc>`` (``sandbox=""``: no scripts,
no forms, a unique origin, so template HTML can never reach the console), the text
part, and each fault with its line. No inline script or style is needed; the frame's
document inherits the console's Content-Security-Policy, so the email's own inline
styles and remote images are not applied in the preview (docs/templates.md).

Without JavaScript the "Preview" button posts the same form to the same route and
gets the editor back with the preview filled in. Saving runs the save-time checks
(syntax, unknown fields, CAN-SPAM for marketing) and shows each fault at its field.
Previews use the built-in sample contact, or a real one by id: its PHI is shown
only with ``phi:read`` and each such preview is audited.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from carepost.core.errors import CarepostError, NotFound, ValidationFailed
from carepost.templates import service
from carepost.templates.models import KINDS
from carepost.templates.sandbox import TemplateError
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import FormData
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

MAX_DATA_CHARACTERS = 20_000
# Where the no-JavaScript preview's editor saves to: a new template or an existing one.
SAVE_TARGET = re.compile(
    r"/templates(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?"
)
NOTICES = {"created": "Template saved.", "updated": "Template saved (a new version)."}
EDITOR_FIELDS = ("name", "kind", "subject", "html", "text", "layout_id")

TEMPLATE_TABLE = Table(
    caption="Email templates",
    id="template",
    row_id=lambda t: str(t.id),
    empty="No templates yet.",
    extra={"cards": True},
    columns=(
        Column("Name", lambda t: t.name, link=lambda t: f"/templates/{t.id}"),
        Column("Kind", lambda t: t.kind),
        Column("Version", lambda t: str(t.version)),
        Column("Changed", lambda t: t.updated_at or t.created_at, kind="time"),
    ),
)


@dataclass
class EditorState:
    """The form as posted (or as saved), and what the preview or save found wrong."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    preview: service.Preview | None = None
    preview_faults: list[str] = field(default_factory=list)


def _text(data: FormData, name: str) -> str:
    value = data.get(name, "")
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


def _state_from_form(data: FormData) -> EditorState:
    names = (*EDITOR_FIELDS, "contact_id", "data")
    values = {name: _text(data, name) for name in names}
    values["kind"] = values["kind"] if values["kind"] in KINDS else "transactional"
    return EditorState(values)


def _optional_id(value: str, field_name: str) -> uuid.UUID | None:
    if not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise ValidationFailed("not a valid id", field=field_name) from None


def _sample_data(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    if len(text) > MAX_DATA_CHARACTERS:
        raise ValidationFailed(f"at most {MAX_DATA_CHARACTERS} characters", field="data")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", field="data"
        ) from None
    if not isinstance(value, dict):
        raise ValidationFailed("sample data is a JSON object", field="data")
    return value


def fault_lines(exc: CarepostError) -> list[str]:
    """Each fault as a sentence naming its part and, for template errors, its line."""
    if isinstance(exc, TemplateError):
        return [exc.detail]
    return [f"{e.field}: {e.message}" for e in exc.errors] or [exc.detail]


def _render_preview(console: Console, session: Session, state: EditorState) -> None:
    values = state.values
    try:
        draft = service.Draft(
            kind=values["kind"],
            subject=values["subject"] or " ",
            html=values["html"] or None,
            text=values["text"] or None,
            layout_id=_optional_id(values["layout_id"], "layout_id"),
        )
        state.preview = service.preview(
            session,
            console.principal.keys,
            draft=draft,
            contact_id=_optional_id(values["contact_id"], "contact_id"),
            data=_sample_data(values["data"]),
            show_phi=console.can("phi:read"),
            actor=console.principal.actor,
        )
    except NotFound as exc:
        state.preview_faults = [exc.detail]
    except CarepostError as exc:
        state.preview_faults = fault_lines(exc)


def _layouts(console: Console, session: Session) -> list[tuple[str, str]]:
    rows = service.list_layouts(session, console.principal.tenant_id, limit=500)
    return [(str(row.id), row.name) for row in rows]


def _render_editor(
    console: Console,
    state: EditorState,
    layouts: list[tuple[str, str]],
    *,
    action: str,
    heading: str,
    status: int = 200,
    versions: list[Any] | None = None,
) -> Response:
    return console.render(
        "console/templates/editor.html",
        status=status,
        title=heading,
        heading=heading,
        state=state,
        layouts=layouts,
        kinds=KINDS,
        action=action,
        versions=versions or [],
        notice=notice_for(console.request, NOTICES),
    )


# --- routes ------------------------------------------------------------------------------


@router.get("/templates")
def templates_page(console: Annotated[Console, Depends(page("templates:read"))]) -> Response:
    with console.session() as session:
        rows = service.list_templates(session, console.principal.tenant_id, limit=500)
    return console.render(
        "console/templates/list.html",
        title="Email templates",
        table=TEMPLATE_TABLE,
        rows=rows,
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/templates/new")
def new_template(console: Annotated[Console, Depends(page("templates:write"))]) -> Response:
    state = EditorState(
        {
            "name": "",
            "kind": "transactional",
            "subject": "Hello {{ contact.first_name | default('there') }}",
            "html": "<p>Hello {{ contact.first_name | default('there') }},</p>\n",
            "text": "",
            "layout_id": "",
            "contact_id": "",
            "data": "",
        }
    )
    with console.session() as session:
        _render_preview(console, session, state)
        layouts = _layouts(console, session)
    return _render_editor(console, state, layouts, action="/templates", heading="New template")


@router.post("/templates/render")
def render_fragment(
    console: Annotated[Console, Depends(page("templates:read"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """The live preview of the posted editor (a fragment for HTMX, else the editor)."""
    state = _state_from_form(data)
    with console.session() as session:
        _render_preview(console, session, state)
        layouts = _layouts(console, session)
    if console.htmx:
        return console.render("console/templates/_preview.html", state=state)
    target = _text(data, "target")
    action = target if SAVE_TARGET.fullmatch(target) else "/templates"
    return _render_editor(console, state, layouts, action=action, heading="Template preview")


def _content(values: dict[str, str]) -> dict[str, Any]:
    name = values["name"].strip()
    if not name or len(name) > 200 or "\n" in name:
        raise ValidationFailed("enter a name of at most 200 characters", field="name")
    return {
        "name": name,
        "kind": values["kind"],
        "subject": values["subject"].strip(),
        "html": values["html"] or None,
        "text": values["text"] or None,
        "layout_id": _optional_id(values["layout_id"], "layout_id"),
    }


def _save(console: Console, data: FormData, template_id: uuid.UUID | None) -> Response:
    state = _state_from_form(data)
    action = "/templates" if template_id is None else f"/templates/{template_id}"
    heading = "New template" if template_id is None else "Edit template"
    tenant_id, actor = console.principal.tenant_id, console.principal.actor
    try:
        # A refused save leaves this unit of work by its exception: rolled back whole.
        with console.session() as session:
            content = _content(state.values)
            if template_id is None:
                row = service.create_template(session, tenant_id, actor=actor, **content)
                saved, done = row.id, "created"
            else:
                service.update_template(
                    session, tenant_id, template_id, changes=content, actor=actor
                )
                saved, done = template_id, "updated"
    except NotFound:
        raise
    except CarepostError as exc:
        for error in exc.errors:
            state.errors.setdefault(error.field.split(".")[-1], error.message)
        if isinstance(exc, TemplateError) or not exc.errors:
            state.general = fault_lines(exc)
        with console.session() as session:
            _render_preview(console, session, state)
            layouts = _layouts(console, session)
        return _render_editor(
            console, state, layouts, action=action, heading=heading, status=exc.status
        )
    return redirect(console.request, f"/templates/{saved}?done={done}")


@router.post("/templates")
def create_template(
    console: Annotated[Console, Depends(page("templates:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    return _save(console, data, None)


@router.get("/templates/{template_id}")
def edit_template(
    template_id: str, console: Annotated[Console, Depends(page("templates:read"))]
) -> Response:
    with console.session() as session:
        row = service.get_template(session, console.principal.tenant_id, parse_id(template_id))
        state = EditorState(
            {
                "name": row.name,
                "kind": row.kind,
                "subject": row.subject,
                "html": row.html or "",
                "text": row.text or "",
                "layout_id": str(row.layout_id) if row.layout_id else "",
                "contact_id": "",
                "data": "",
            }
        )
        _render_preview(console, session, state)
        layouts = _layouts(console, session)
        versions = service.list_versions(session, console.principal.tenant_id, row.id)[:10]
    return _render_editor(
        console,
        state,
        layouts,
        action=f"/templates/{row.id}",
        heading=row.name,
        versions=versions,
    )


@router.post("/templates/{template_id}")
def update_template(
    template_id: str,
    console: Annotated[Console, Depends(page("templates:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = parse_id(template_id)
    with console.session() as session:
        service.get_template(session, console.principal.tenant_id, target)  # 404 first
    return _save(console, data, target)
