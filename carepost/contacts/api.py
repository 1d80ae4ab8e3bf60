"""REST routes for contacts (thin: permissions, shapes, service calls, PHI-view audit).

``contacts:read`` shows that a contact exists and when it changed; its PHI needs
``phi:read`` as well, and every response carrying PHI of a stored contact is
audited as ``contact.view_phi``. PHI never travels in a URL: searching by email,
phone or external id is ``POST /contacts/lookup`` with a JSON body.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.orm import Session

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.contacts import custom_fields, merge, service, sync, upserts
from carepost.contacts.data_schemas import BatchOutcome, UpsertBatch, UpsertOne
from carepost.contacts.fields import PHI_FIELDS
from carepost.contacts.models import Contact
from carepost.contacts.schemas import (
    ContactCreate,
    ContactLookup,
    ContactMatches,
    ContactMergeOut,
    ContactMergeRequest,
    ContactOut,
    ContactUpdate,
)
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.runtime import Runtime

router = APIRouter(prefix="/contacts", tags=["contacts"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
PHI_PERMISSION = "phi:read"


def _shown(
    session: Session, principal: Principal, contacts: Sequence[Contact], *, show_phi: bool
) -> list[ContactOut]:
    """Contacts as answered: with their external ids and current fields when PHI shows."""
    if not show_phi:
        return [ContactOut.of(c, show_phi=False) for c in contacts]
    identifiers = sync.identifiers_of(session, principal.tenant_id, [c.id for c in contacts])
    known = custom_fields.load_schema(session, principal.tenant_id).keys()
    return [
        ContactOut.of(c, show_phi=True, external_ids=identifiers.get(c.id), known_fields=known)
        for c in contacts
    ]


def _reject_phi_in_query(request: Request) -> None:
    """A search by PHI in the query string would land in proxy and server access logs."""
    misplaced = sorted(set(request.query_params) & set(PHI_FIELDS))
    if misplaced:
        message = "PHI never goes in a URL: search with POST /api/v1/contacts/lookup"
        raise ValidationFailed(
            message,
            errors=[FieldError(f"#/query/{name}", message) for name in misplaced],
        )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a contact")
def create_contact(body: ContactCreate, runtime: RuntimeDep, principal: Writer) -> ContactOut:
    with runtime.bound_session(principal.keys) as session:
        contact = service.create_contact(
            session, principal.keys, values=body.as_values(only_set=True), actor=principal.actor
        )
        # Everything shown was just sent by the caller: nothing stored is disclosed.
        return ContactOut.of(contact, show_phi=principal.can(PHI_PERMISSION))


@router.get("", summary="List contacts (PHI only with phi:read; each page audited)")
def list_contacts(
    request: Request,
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[ContactOut]:
    _reject_phi_in_query(request)
    after = decode_cursor(cursor)
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        contacts = service.list_contacts(
            session, principal.tenant_id, after=after, limit=limit + 1, with_phi=show_phi
        )
        more = len(contacts) > limit
        contacts = contacts[:limit]
        if show_phi:
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=contacts,
                via="list",
            )
        return Page[ContactOut](
            items=_shown(session, principal, contacts, show_phi=show_phi),
            next_cursor=encode_cursor(contacts[-1].id) if more else None,
        )


@router.post(
    "/lookup",
    summary="Find contacts by email, phone or external id (needs phi:read; audited)",
)
def lookup_contacts(body: ContactLookup, runtime: RuntimeDep, principal: Reader) -> ContactMatches:
    # Whether someone is a contact of a healthcare organization is itself PHI.
    principal.require(PHI_PERMISSION)
    field, value = body.criterion()
    with runtime.bound_session(principal.keys) as session:
        contacts = service.find_contacts(session, principal.keys, field=field, value=value)
        service.record_phi_view(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            contacts=contacts,
            via="lookup",
        )
        return ContactMatches(items=_shown(session, principal, contacts, show_phi=True))


@router.put(
    "/upsert",
    summary="Create or update one contact, found by email or an external id (idempotent)",
    responses={201: {"description": "Created", "model": ContactOut}},
)
def upsert_contact(
    body: UpsertOne, response: Response, runtime: RuntimeDep, principal: Writer
) -> ContactOut:
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        [result] = upserts.upsert_contacts(
            session, principal.keys, [body.contact], match=body.match, actor=principal.actor
        )
        if result.status == "error":
            first = result.errors[0]
            raise ValidationFailed(
                first.message,
                errors=[FieldError(f"#/body/contact/{e.field}", e.message) for e in result.errors],
            )
        assert result.id is not None
        contact = service.get_contact(session, principal.tenant_id, result.id, with_phi=show_phi)
        if result.status == "created":
            response.status_code = status.HTTP_201_CREATED
        elif show_phi:
            # An update answers with stored PHI the caller may not have sent.
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=[contact],
                via="upsert",
            )
        return _shown(session, principal, [contact], show_phi=show_phi)[0]


@router.post(
    "/batch",
    summary="Upsert up to 10,000 contacts; each item gets its own result",
)
def upsert_batch(body: UpsertBatch, runtime: RuntimeDep, principal: Writer) -> BatchOutcome:
    with runtime.bound_session(principal.keys) as session:
        results = upserts.upsert_contacts(
            session, principal.keys, body.items, match=body.match, actor=principal.actor
        )
    return BatchOutcome.of(results)


@router.get("/{contact_id}", summary="Get a contact (PHI only with phi:read; audited)")
def get_contact(contact_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> ContactOut:
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        contact = service.get_contact(session, principal.tenant_id, contact_id, with_phi=show_phi)
        if show_phi:
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=[contact],
                via="get",
            )
        return _shown(session, principal, [contact], show_phi=show_phi)[0]


@router.patch("/{contact_id}", summary="Change a contact")
def update_contact(
    contact_id: uuid.UUID, body: ContactUpdate, runtime: RuntimeDep, principal: Writer
) -> ContactOut:
    show_phi = principal.can(PHI_PERMISSION)
    with runtime.bound_session(principal.keys) as session:
        contact, _changed = service.update_contact(
            session,
            principal.keys,
            contact_id=contact_id,
            changes=body.as_values(only_set=True),
            actor=principal.actor,
        )
        if show_phi:
            # The answer carries stored PHI the caller did not send in this request.
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                contacts=[contact],
                via="update",
            )
        return _shown(session, principal, [contact], show_phi=show_phi)[0]


@router.delete(
    "/{contact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a contact and its PHI",
)
def delete_contact(contact_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_contact(
            session, tenant_id=principal.tenant_id, contact_id=contact_id, actor=principal.actor
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{contact_id}/merge",
    summary="Merge duplicates into this contact (the survivor); their ids then answer 404 "
    "with merged_into",
)
def merge_contacts(
    contact_id: uuid.UUID, body: ContactMergeRequest, runtime: RuntimeDep, principal: Writer
) -> ContactMergeOut:
    with runtime.bound_session(principal.keys) as session:
        outcome = merge.merge_contacts(
            session, principal.keys, contact_id, body.duplicate_ids, actor=principal.actor
        )
    # Ids, field names and counts only: nothing stored is disclosed, so no PHI view.
    return ContactMergeOut(
        survivor_id=outcome.survivor_id,
        merged_ids=outcome.merged_ids,
        filled=outcome.filled,
        events=outcome.events,
        consent_records=outcome.consent_records,
        list_stints=outcome.list_stints,
    )
