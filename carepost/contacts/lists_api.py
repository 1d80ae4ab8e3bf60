"""REST routes for static lists and their members (``/lists``).

Reading needs ``contacts:read``, changing ``contacts:write``. Nothing here is PHI:
lists have names the organization chose, and members are shown as contact ids
with the time they joined.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.contacts import lists
from carepost.contacts.activity_schemas import (
    ListCreate,
    ListOut,
    ListUpdate,
    MemberChanges,
    MemberChangesOutcome,
    MemberOut,
)
from carepost.core.runtime import Runtime

router = APIRouter(prefix="/lists", tags=["lists"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("", summary="List the lists")
def list_lists(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[ListOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = lists.list_lists(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        counts = lists.member_counts(session, principal.tenant_id, [row.id for row in rows])
        return Page[ListOut](
            items=[ListOut.of(row, counts.get(row.id, 0)) for row in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a list")
def create_list(body: ListCreate, runtime: RuntimeDep, principal: Writer) -> ListOut:
    with runtime.bound_session(principal.keys) as session:
        row = lists.create_list(
            session,
            principal.tenant_id,
            name=body.name,
            description=body.description,
            actor=principal.actor,
        )
        return ListOut.of(row, 0)


@router.get("/{list_id}", summary="Get a list")
def get_list(list_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> ListOut:
    with runtime.bound_session(principal.keys) as session:
        row = lists.get_list(session, principal.tenant_id, list_id)
        counts = lists.member_counts(session, principal.tenant_id, [row.id])
        return ListOut.of(row, counts.get(row.id, 0))


@router.patch("/{list_id}", summary="Rename a list or change its description")
def update_list(
    list_id: uuid.UUID, body: ListUpdate, runtime: RuntimeDep, principal: Writer
) -> ListOut:
    with runtime.bound_session(principal.keys) as session:
        row = lists.update_list(
            session, principal.tenant_id, list_id, changes=body.changes(), actor=principal.actor
        )
        counts = lists.member_counts(session, principal.tenant_id, [row.id])
        return ListOut.of(row, counts.get(row.id, 0))


@router.delete(
    "/{list_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a list and its membership history (the contacts stay)",
)
def delete_list(list_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        lists.delete_list(session, principal.tenant_id, list_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{list_id}/members",
    summary="Add and remove up to 10,000 contacts; each id that cannot apply gets an error",
)
def change_members(
    list_id: uuid.UUID, body: MemberChanges, runtime: RuntimeDep, principal: Writer
) -> MemberChangesOutcome:
    with runtime.bound_session(principal.keys) as session:
        outcome = lists.change_members(
            session,
            principal.tenant_id,
            list_id,
            add=body.add,
            remove=body.remove,
            actor=principal.actor,
        )
    return MemberChangesOutcome.of(outcome)


@router.get("/{list_id}/members", summary="The current members: contact ids and when they joined")
def list_members(
    list_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[MemberOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = lists.list_members(
            session, principal.tenant_id, list_id, after=decode_cursor(cursor), limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[MemberOut](
        items=[MemberOut(contact_id=contact_id, joined_at=at) for contact_id, at in rows],
        next_cursor=encode_cursor(rows[-1][0]) if more else None,
    )
