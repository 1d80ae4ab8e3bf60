"""REST routes for the tenant's contact field schema (``/contact-fields``).

Reading the schema needs ``contacts:read``; changing it ``contacts:write``. The
schema holds no PHI (names and choices of fields, not anyone's values).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.contacts import custom_fields
from carepost.contacts.data_schemas import (
    ContactFieldCreate,
    ContactFieldList,
    ContactFieldOut,
    ContactFieldUpdate,
)
from carepost.core.runtime import Runtime

router = APIRouter(prefix="/contact-fields", tags=["contact fields"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]


@router.get("", summary="List the contact fields")
def list_fields(runtime: RuntimeDep, principal: Reader) -> ContactFieldList:
    with runtime.bound_session(principal.keys) as session:
        rows = custom_fields.list_fields(session, principal.tenant_id)
        return ContactFieldList(items=[ContactFieldOut.of(row) for row in rows])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Define a contact field")
def create_field(
    body: ContactFieldCreate, runtime: RuntimeDep, principal: Writer
) -> ContactFieldOut:
    with runtime.bound_session(principal.keys) as session:
        row = custom_fields.create_field(
            session, principal.tenant_id, actor=principal.actor, **body.model_dump()
        )
        return ContactFieldOut.of(row)


@router.get("/{field_id}", summary="Get a contact field")
def get_field(field_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> ContactFieldOut:
    with runtime.bound_session(principal.keys) as session:
        return ContactFieldOut.of(custom_fields.get_field(session, principal.tenant_id, field_id))


@router.patch(
    "/{field_id}",
    summary="Change a contact field (type and granularity only while it holds no values)",
)
def update_field(
    field_id: uuid.UUID, body: ContactFieldUpdate, runtime: RuntimeDep, principal: Writer
) -> ContactFieldOut:
    changes = {name: value for name, value in body.changes().items() if value is not None}
    with runtime.bound_session(principal.keys) as session:
        row = custom_fields.update_field(
            session, principal.tenant_id, field_id, changes=changes, actor=principal.actor
        )
        return ContactFieldOut.of(row)


@router.delete(
    "/{field_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a contact field and its tokens",
)
def delete_field(field_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        custom_fields.delete_field(session, principal.tenant_id, field_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
