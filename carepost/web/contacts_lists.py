"""Static lists in the console: the lists with their member counts, create, rename,
delete (after a confirmation page), and the members of one list, paged.

Nothing here is PHI: list names are the organization's, members are shown by contact
id and the time they joined (their names are one click away, on the contact page,
behind its own reveal).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.api.pagination import decode_cursor, encode_cursor
from carepost.contacts import lists
from carepost.contacts.activity_models import ContactList
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
NOTICES = {
    "created": "List created.",
    "renamed": "Changes saved.",
    "deleted": "List deleted. Its contacts were kept.",
}

LIST_FIELDS = (
    Field("name", "Name", required=True, attrs={"maxlength": "200"}),
    Field(
        "description",
        "Description",
        "textarea",
        hint="What the list is for, so colleagues pick the right one.",
        attrs={"maxlength": "2000"},
    ),
)
CREATE_FORM = FormSpec(id="list", submit="Create list", fields=LIST_FIELDS)
RENAME_FORM = FormSpec(id="rename", submit="Save changes", fields=LIST_FIELDS)


@dataclass(frozen=True)
class ListRow:
    row: ContactList
    members: int

    @property
    def id(self) -> uuid.UUID:
        return self.row.id


@dataclass(frozen=True)
class MemberRow:
    id: uuid.UUID
    joined_at: datetime


LIST_TABLE = Table(
    caption="Lists of your organization",
    id="list",
    row_id=lambda r: str(r.id),
    empty="No lists yet.",
    extra={"cards": True},
    columns=(
        Column("Name", lambda r: r.row.name, link=lambda r: f"/lists/{r.id}"),
        Column("Description", lambda r: r.row.description or "—"),
        Column("Members", lambda r: r.members, kind="number"),
        Column("Created", lambda r: r.row.created_at, kind="time"),
    ),
)

MEMBER_TABLE = Table(
    caption="Current members",
    id="member",
    row_id=lambda m: str(m.id),
    empty="No members. Add contacts from their page, or with the API.",
    extra={"cards": True},
    columns=(
        Column("Contact", template="cells/contact_link.html"),
        Column("Joined", lambda m: m.joined_at, kind="time"),
    ),
)


def _checked(form: BoundForm) -> tuple[str, str]:
    """(name, description), with the API's rules: one line for the name, text for both."""
    name = form.value("name").strip()
    description = form.value("description").strip()
    errors = []
    if has_forbidden_characters(name):
        errors.append(FieldError("name", "use one line without control characters"))
    if has_forbidden_characters(description, multi_line=True):
        errors.append(FieldError("description", "remove the control characters"))
    form.validate(*errors)
    return name, description


def _lists_page(console: Console, *, form: BoundForm | None = None, status: int = 200) -> Response:
    cursor = console.request.query_params.get("after", "")
    try:
        after = decode_cursor(cursor or None)
    except ValidationFailed:
        after = None
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        found = lists.list_lists(session, tenant_id, after=after, limit=PAGE_SIZE + 1)
        shown = found[:PAGE_SIZE]
        counts = lists.member_counts(session, tenant_id, [row.id for row in shown])
    rows = [ListRow(row, counts.get(row.id, 0)) for row in shown]
    next_url = None
    if len(found) > PAGE_SIZE:
        next_url = "/lists?" + urlencode({"after": encode_cursor(shown[-1].id)})
    return console.render(
        "contacts/lists.html",
        status=status,
        title="Lists",
        table=LIST_TABLE,
        rows=rows,
        next_url=next_url,
        first_url="/lists" if cursor else None,
        form=form or CREATE_FORM.bind(),
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/lists")
def lists_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    return _lists_page(console)


@router.post("/lists")
def create_list(
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = CREATE_FORM.bind(data)
    try:
        name, description = _checked(form)
        with console.session() as session:
            row = lists.create_list(
                session,
                console.principal.tenant_id,
                name=name,
                description=description,
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _lists_page(console, form=form, status=exc.status)
    return redirect(console.request, f"/lists/{row.id}?done=created")


def _list_page(
    console: Console, list_id: uuid.UUID, *, form: BoundForm | None = None, status: int = 200
) -> Response:
    cursor = console.request.query_params.get("after", "")
    try:
        after = decode_cursor(cursor or None)
    except ValidationFailed:
        after = None
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        row = lists.get_list(session, tenant_id, list_id)
        count = lists.member_counts(session, tenant_id, [row.id]).get(row.id, 0)
        found = lists.list_members(session, tenant_id, row.id, after=after, limit=PAGE_SIZE + 1)
    members = [MemberRow(contact_id, joined) for contact_id, joined in found[:PAGE_SIZE]]
    next_url = None
    if len(found) > PAGE_SIZE:
        next_url = f"/lists/{row.id}?" + urlencode({"after": encode_cursor(members[-1].id)})
    return console.render(
        "contacts/list_detail.html",
        status=status,
        title=row.name,
        contact_list=row,
        count=count,
        table=MEMBER_TABLE,
        rows=members,
        next_url=next_url,
        first_url=f"/lists/{row.id}" if cursor else None,
        form=form or RENAME_FORM.bind(name=row.name, description=row.description),
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/lists/{list_id}")
def list_page(
    list_id: str, console: Annotated[Console, Depends(page("contacts:read"))]
) -> Response:
    return _list_page(console, parse_id(list_id))


@router.post("/lists/{list_id}")
def rename_list(
    list_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = parse_id(list_id)
    with console.session() as session:
        lists.get_list(session, console.principal.tenant_id, target)
    form = RENAME_FORM.bind(data)
    try:
        name, description = _checked(form)
        with console.session() as session:
            lists.update_list(
                session,
                console.principal.tenant_id,
                target,
                changes={"name": name, "description": description},
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _list_page(console, target, form=form, status=exc.status)
    return redirect(console.request, f"/lists/{target}?done=renamed")


@router.get("/lists/{list_id}/delete")
def confirm_delete_list(
    list_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        row = lists.get_list(session, console.principal.tenant_id, parse_id(list_id))
        count = lists.member_counts(session, console.principal.tenant_id, [row.id]).get(row.id, 0)
    return console.render(
        "contacts/confirm_delete.html",
        title=f"Delete {row.name}?",
        heading=f"Delete the list “{row.name}”?",
        consequences=[
            f"Its {count} current member{'' if count == 1 else 's'} and its membership "
            "history are removed from the list.",
            "The contacts themselves are kept.",
            "Campaigns and workflows that use this list will no longer find it.",
        ],
        action=f"/lists/{row.id}/delete",
        cancel=f"/lists/{row.id}",
        submit="Delete list",
    )


@router.post("/lists/{list_id}/delete")
def delete_list(
    list_id: str, console: Annotated[Console, Depends(page("contacts:write"))]
) -> Response:
    with console.session() as session:
        lists.delete_list(
            session, console.principal.tenant_id, parse_id(list_id), actor=console.principal.actor
        )
    return redirect(console.request, "/lists?done=deleted")
