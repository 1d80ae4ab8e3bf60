"""The contact field schema in the console: the organization's custom fields with their
type, PHI flag, sealing and granularity; define a field, seal one, delete one (after a
confirmation page that says whether contacts hold values of it).

The same service as ``/api/v1/contact-fields`` (:mod:`carepost.contacts.custom_fields`)
decides what is allowed: a key is immutable, a sealed field holding values cannot be
unsealed, a deleted field's tokens go at once. The schema holds no PHI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.contacts import custom_fields
from carepost.contacts.models import CustomField
from carepost.contacts.tokens import DATE_GRANULARITIES, NUMBER_GRANULARITIES, FieldType
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for, row_response

router = APIRouter(include_in_schema=False)

NOTICES = {
    "created": "Field created.",
    "sealed": "Field sealed: its values are now encrypted only and cannot be segmented on.",
    "deleted": "Field deleted.",
}
TYPE_LABELS = {
    FieldType.STRING: "Text",
    FieldType.NUMBER: "Number",
    FieldType.DATE: "Date",
    FieldType.DATETIME: "Date and time",
    FieldType.BOOLEAN: "Yes / no",
    FieldType.CHOICE: "Choice (one of a list)",
    FieldType.MULTI_CHOICE: "Multiple choice (several of a list)",
}
GRANULARITY_LABELS = {
    "0.1": "0.1 units (numbers)",
    "1": "1 unit (numbers)",
    "10": "10 units (numbers)",
    "day": "Day (dates)",
    "month": "Month (dates)",
    "year": "Year (dates)",
}
YES = "yes"

FIELD_FORM = FormSpec(
    id="field",
    submit="Create field",
    fields=(
        Field(
            "label",
            "Label",
            required=True,
            hint="What people see, e.g. “Conditions”.",
            attrs={"maxlength": "200"},
        ),
        Field(
            "key",
            "Key",
            required=True,
            hint="How the API, imports and templates name it: lower-case letters, digits "
            "and _, starting with a letter, e.g. conditions. It cannot change later.",
            attrs={"maxlength": "40", "spellcheck": "false", "pattern": "[a-z][a-z0-9_]*"},
        ),
        Field(
            "type",
            "Type",
            "select",
            required=True,
            choices=tuple(Choice(str(t), label) for t, label in TYPE_LABELS.items()),
        ),
        Field(
            "choices",
            "Choices",
            "textarea",
            hint="Choice fields only: one choice per line, e.g. diabetes_t2. Letters, "
            "digits and _ . : - only.",
            attrs={"spellcheck": "false"},
        ),
        Field(
            "granularity",
            "Segment granularity",
            "select",
            hint="Numbers and dates only: how finely segments can tell values apart. "
            "Values are matched through keyed tokens at this precision, never in clear.",
            choices=(
                Choice("", "Default (1 unit, or a day)"),
                *(
                    Choice(g, GRANULARITY_LABELS[g])
                    for g in (*NUMBER_GRANULARITIES, *DATE_GRANULARITIES)
                ),
            ),
        ),
        Field(
            "options",
            "Options",
            "checkboxes",
            choices=(
                Choice(
                    "phi",
                    "Holds PHI",
                    "Shown only to people allowed to see PHI; every view audited.",
                ),
                Choice("sealed", "Sealed", "Encrypted only: no tokens, so segments cannot use it."),
                Choice("past_only", "Past dates only", "Date fields: refuse dates in the future."),
            ),
        ),
    ),
)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


FIELD_TABLE = Table(
    caption="Custom contact fields",
    id="field",
    row_id=lambda f: str(f.id),
    empty="No custom fields yet.",
    extra={"cards": True},
    columns=(
        Column("Label", lambda f: f.label),
        Column("Key", lambda f: f.key, kind="code"),
        Column("Type", lambda f: TYPE_LABELS.get(FieldType(f.type), f.type)),
        Column("PHI", lambda f: "PHI" if f.phi else "not PHI", kind="badge"),
        Column("Sealed", lambda f: "sealed" if f.sealed else "segmentable", kind="badge"),
        Column("Granularity", lambda f: f.granularity or "—"),
        Column("Choices", lambda f: f.choices or [], kind="tags"),
        Column(
            "Actions",
            template="cells/field_actions.html",
            permission="contacts:write",
            hidden_label=True,
        ),
    ),
)


def _fields_page(console: Console, *, form: BoundForm | None = None, status: int = 200) -> Response:
    with console.session() as session:
        rows = custom_fields.list_fields(session, console.principal.tenant_id)
    return console.render(
        "contacts/fields.html",
        status=status,
        title="Contact fields",
        table=FIELD_TABLE,
        rows=rows,
        form=form or FIELD_FORM.bind(type="string", options=["phi"]),
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/contact-fields")
def fields_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    return _fields_page(console)


def _choices(form: BoundForm) -> list[str] | None:
    lines = [line.strip() for line in form.value("choices").splitlines()]
    return [line for line in lines if line] or None


def _service_error(exc: CarepostError) -> CarepostError:
    """``choices/3`` (a JSON pointer into the list) is the fourth line of the Choices box."""
    if not any(e.field.startswith("choices/") for e in exc.errors):
        return exc
    errors = []
    for error in exc.errors:
        if error.field.startswith("choices/") and error.field[8:].isdigit():
            line = int(error.field[8:]) + 1
            error = FieldError("choices", f"line {line}: {error.message}")
        errors.append(error)
    return ValidationFailed(errors[0].message, errors=errors)


@router.post("/contact-fields")
def create_field(
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = FIELD_FORM.bind(data)
    options = set(form.selected("options"))
    try:
        label = form.value("label").strip()
        problems = []
        if has_forbidden_characters(label):
            problems.append(FieldError("label", "use one line without control characters"))
        if form.value("type") not in {str(t) for t in FieldType}:
            problems.append(FieldError("type", "choose one of the types"))
        form.validate(*problems)
        with console.session() as session:
            custom_fields.create_field(
                session,
                console.principal.tenant_id,
                key=form.value("key").strip(),
                label=label,
                type=form.value("type"),
                phi="phi" in options,
                sealed="sealed" in options,
                granularity=form.value("granularity") or None,
                past_only="past_only" in options,
                choices=_choices(form),
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(_service_error(exc))
        return _fields_page(console, form=form, status=exc.status)
    return redirect(console.request, "/contact-fields?done=created")


@router.post("/contact-fields/{field_id}/seal")
def seal_field(
    field_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        row = custom_fields.update_field(
            session,
            console.principal.tenant_id,
            parse_id(field_id),
            changes={"sealed": True},
            actor=console.principal.actor,
        )
    if console.htmx:
        return row_response(
            console,
            FIELD_TABLE,
            row,
            f"“{row.label}” is sealed: encrypted only, no longer usable in segments.",
        )
    return redirect(console.request, "/contact-fields?done=sealed")


def _field(console: Console, field_id: str) -> tuple[CustomField, bool]:
    with console.session() as session:
        row = custom_fields.get_field(session, console.principal.tenant_id, parse_id(field_id))
        has_data = custom_fields.field_has_data(session, console.principal.tenant_id, row.key)
    return row, has_data


@router.get("/contact-fields/{field_id}/delete")
def confirm_delete_field(
    field_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    row, has_data = _field(console, field_id)
    consequences = [
        "Contacts hold values of this field: they stop being shown and are dropped "
        "when each contact is next written."
        if has_data
        else "No contact holds a value of this field.",
        f"Segments and templates that use the key “{row.key}” will no longer find it.",
    ]
    return console.render(
        "contacts/confirm_delete.html",
        title=f"Delete {row.label}?",
        heading=f"Delete the field “{row.label}”?",
        consequences=consequences,
        action=f"/contact-fields/{row.id}/delete",
        cancel="/contact-fields",
        submit="Delete field",
    )


@router.post("/contact-fields/{field_id}/delete")
def delete_field(
    field_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        custom_fields.delete_field(
            session, console.principal.tenant_id, parse_id(field_id), actor=console.principal.actor
        )
    return redirect(console.request, "/contact-fields?done=deleted")
