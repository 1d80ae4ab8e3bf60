"""The contacts list: filter by list and journey stage, page by cursor, find a contact by
an exact email, phone number, MRN or external id.

What shows by default is not PHI: a contact's id, journey stage and when it was added
and changed. People holding ``phi:read`` may ask for names and emails as well; each
page that shows them is written to the audit trail (``contact.view_phi``, ``via=list``),
as the API does.

Searching never uses ``LIKE``: email, phone and identifiers are stored encrypted, with a
keyed blind index (an HMAC) beside them, so a look-up is an exact match of the index
(:func:`carepost.contacts.service.find_contacts`). The value searched for is PHI: it is
posted in the body, never put in a URL, and the search needs ``phi:read`` (whether
someone is a patient of the organization is itself PHI) and is audited
(``via=lookup``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from carepost.api.pagination import decode_cursor, encode_cursor
from carepost.contacts import lists, service, stages
from carepost.contacts.models import BUILT_IN_STAGES, Contact
from carepost.core.errors import CarepostError, FieldError, NotFound, ValidationFailed
from carepost.web.console import Console, form_data, page
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
PHI_PERMISSION = "phi:read"
SEARCH_KINDS = (
    Choice("email", "Email address"),
    Choice("phone", "Phone number"),
    Choice("mrn", "MRN (medical record number)"),
    Choice("external_id", "External id"),
)
SEARCH_HINT = (
    "Exact match only. Email, phone and identifiers are stored encrypted and found by a "
    "keyed fingerprint (a blind index), never by scanning text, so a partial value finds "
    "nothing. Enter phone numbers in international form (+14155552671). Each search is "
    "recorded in the audit trail."
)

FILTER_FORM = FormSpec(
    id="contact-filter",
    submit="Apply filters",
    mark_optional=False,
    fields=(
        Field("list", "List", "select"),
        Field("stage", "Journey stage", "select"),
        Field(
            "show",
            "Columns",
            "checkboxes",
            choices=(
                Choice(
                    "phi",
                    "Show names and emails",
                    "Each page shown is recorded in the audit trail.",
                ),
            ),
        ),
    ),
)
FILTER_NAMES = ("list", "stage", "show")

SEARCH_FORM = FormSpec(
    id="contact-search",
    submit="Find contact",
    mark_optional=False,
    fields=(
        Field("by", "Find by", "select", choices=SEARCH_KINDS, required=True),
        Field(
            "value",
            "Value",
            hint=SEARCH_HINT,
            required=True,
            attrs={"maxlength": "320", "spellcheck": "false"},
        ),
    ),
)


def full_name(contact: Contact) -> str:
    return " ".join(part for part in (contact.first_name, contact.last_name) if part)


CONTACT_TABLE = Table(
    caption="Contacts, oldest first",
    id="contact",
    row_id=lambda c: str(c.id),
    empty="No contacts match.",
    extra={"cards": True},
    columns=(
        Column("Contact", template="cells/contact_link.html"),
        Column("Journey stage", lambda c: c.journey_stage, kind="badge"),
        Column("Added", lambda c: c.created_at, kind="time"),
        Column("Changed", lambda c: c.updated_at, kind="time"),
    ),
)

CONTACT_PHI_TABLE = Table(
    caption="Contacts with names and emails (this view is audited)",
    id="contact",
    row_id=lambda c: str(c.id),
    empty="No contacts match.",
    extra={"cards": True},
    columns=(
        Column("Contact", template="cells/contact_link.html"),
        Column("Name", full_name, phi=True),
        Column("Email", lambda c: c.email, phi=True),
        Column("Journey stage", lambda c: c.journey_stage, kind="badge"),
        Column("Added", lambda c: c.created_at, kind="time"),
        Column("Changed", lambda c: c.updated_at, kind="time"),
    ),
)


def stage_choices(session: Session, tenant_id: uuid.UUID) -> list[Choice]:
    """Built-in stages in their journey order, then the organization's own."""
    keys = stages.stage_keys(session, tenant_id)
    custom = sorted(keys - set(BUILT_IN_STAGES))
    return [Choice(key, key) for key in (*BUILT_IN_STAGES, *custom)]


def list_choices(session: Session, tenant_id: uuid.UUID, limit: int = 500) -> list[Choice]:
    rows = lists.list_lists(session, tenant_id, after=None, limit=limit)
    return [Choice(str(row.id), row.name) for row in sorted(rows, key=lambda r: r.name.lower())]


def _filter_form(console: Console, params: FormData) -> BoundForm:
    tenant_id = console.principal.tenant_id
    chosen = params.get("list")
    with console.session() as session:
        stage_options = stage_choices(session, tenant_id)
        list_options = list_choices(session, tenant_id)
        if isinstance(chosen, str) and chosen not in {c.value for c in list_options}:
            # A list beyond the first few hundred (linked from its own page) is still
            # offered; an unknown id is refused by _read_filter.
            try:
                extra = lists.get_list(session, tenant_id, uuid.UUID(chosen))
                list_options.append(Choice(str(extra.id), extra.name))
            except (ValueError, NotFound):
                pass
    spec = FILTER_FORM.with_choices("stage", [Choice("", "Any stage"), *stage_options])
    spec = spec.with_choices("list", [Choice("", "Any list"), *list_options])
    if not console.can(PHI_PERMISSION):
        spec = spec.with_choices("show", [])
    form = spec.bind(params)
    form.values.setdefault("show", [])
    return form


def _read_filter(form: BoundForm) -> tuple[str | None, uuid.UUID | None]:
    """(stage, list id) from the filter form; a value not offered is a field error."""
    errors: list[FieldError] = []
    stage = form.value("stage") or None
    if stage is not None and stage not in {c.value for c in form.spec.field("stage").choices}:
        errors.append(FieldError("stage", "choose one of the journey stages"))
    list_id = None
    chosen = form.value("list")
    if chosen:
        if chosen not in {c.value for c in form.spec.field("list").choices}:
            errors.append(FieldError("list", "choose one of your lists"))
        else:
            list_id = uuid.UUID(chosen)
    form.validate(*errors)
    return stage, list_id


def _query(form: BoundForm, show_phi: bool) -> dict[str, str]:
    query = {name: form.value(name) for name in ("list", "stage") if form.value(name)}
    if show_phi:
        query["show"] = "phi"
    return query


def _page_context(console: Console, **context: Any) -> dict[str, Any]:
    search = context.pop("search", None)
    if search is None and console.can(PHI_PERMISSION):
        search = SEARCH_FORM.bind(by="email")
    return {"title": "Contacts", "search": search, **context}


@router.get("/contacts")
def contacts_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    request = console.request
    params: dict[str, str | list[str]] = {
        name: request.query_params.getlist(name) if name == "show" else value
        for name in FILTER_NAMES
        if (value := request.query_params.get(name)) is not None
    }
    form = _filter_form(console, params)
    show_phi = "phi" in form.selected("show") and console.can(PHI_PERMISSION)
    table = CONTACT_PHI_TABLE if show_phi else CONTACT_TABLE
    rows: list[Contact] = []
    next_url = None
    status = 200
    cursor = request.query_params.get("after", "")
    try:
        stage, list_id = _read_filter(form)
        after = decode_cursor(cursor or None)
        with console.session() as session:
            found = service.list_contacts(
                session,
                console.principal.tenant_id,
                after=after,
                limit=PAGE_SIZE + 1,
                with_phi=show_phi,
                journey_stage=stage,
                list_id=list_id,
            )
            rows = found[:PAGE_SIZE]
            if show_phi:
                service.record_phi_view(
                    session,
                    tenant_id=console.principal.tenant_id,
                    actor=console.principal.actor,
                    contacts=rows,
                    via="list",
                )
        if len(found) > PAGE_SIZE:
            next_query = {**_query(form, show_phi), "after": encode_cursor(rows[-1].id)}
            next_url = "/contacts?" + urlencode(next_query)
    except ValidationFailed as exc:
        if any(error.field == "#/query/cursor" for error in exc.errors):
            form.add_error(None, "the page link is not valid: start again from the first page")
        else:
            form.failed(exc)
        status = 422
    first_query = _query(form, show_phi)
    return console.render(
        "contacts/list.html",
        status=status,
        **_page_context(
            console,
            form=form,
            table=table,
            rows=rows,
            next_url=next_url,
            first_url=("/contacts?" + urlencode(first_query)) if cursor else None,
            show_phi=show_phi,
        ),
    )


@router.post("/contacts/search")
def search_contacts(
    console: Annotated[Console, Depends(page(PHI_PERMISSION))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    console.principal.require("contacts:read")
    search = SEARCH_FORM.bind(data)
    filters = _filter_form(console, {})
    rows: list[Contact] = []
    status = 200
    offered = {c.value for c in SEARCH_KINDS}
    try:
        by = search.value("by")
        search.validate(*([] if by in offered else [FieldError("by", "choose what to search by")]))
        with console.session() as session:
            rows = service.find_contacts(
                session, console.principal.keys, field=by, value=search.value("value")
            )
            service.record_phi_view(
                session,
                tenant_id=console.principal.tenant_id,
                actor=console.principal.actor,
                contacts=rows,
                via="lookup",
            )
    except CarepostError as exc:
        # The service names the field it was asked about (email, mrn …): the value box.
        renamed = [
            FieldError("value" if e.field in offered else e.field, e.message) for e in exc.errors
        ]
        search.failed(ValidationFailed(exc.detail, errors=renamed) if renamed else exc)
        status = exc.status
    return console.render(
        "contacts/list.html",
        status=status,
        **_page_context(
            console,
            form=filters,
            search=search,
            searched=not search.invalid,
            table=CONTACT_PHI_TABLE,
            rows=rows,
            next_url=None,
            first_url=None,
            show_phi=True,
        ),
    )
