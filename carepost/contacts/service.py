"""Contacts: create, read, change, delete and look up by identifier, within one tenant.

Every query filters on the tenant, so another organization's contact is simply
"not found". PHI is encrypted by the column types; equality look-ups and
per-tenant uniqueness go through keyed blind indexes (:mod:`carepost.contacts.fields`).

Audit: writes record the *names* of the fields they touched, never values;
every disclosure of PHI is recorded by the caller through :func:`record_phi_view`
in the same transaction as the read, so a view that cannot be audited fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from carepost.audit import service as audit
from carepost.contacts import merge, sync
from carepost.contacts.activity_models import ListMembership
from carepost.contacts.fields import INDEXED_FIELDS, STANDARD_FIELDS, IndexKind
from carepost.contacts.models import Contact, ContactIdentifier
from carepost.contacts.prepare import IDENTIFIER_KINDS
from carepost.contacts.sync import identifier_token
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys

# Views that disclose a page of contacts at once (audited as one event per page).
PAGE_VIEWS = frozenset({"list", "lookup"})
# Values arriving from the API layer: field name -> raw text, or None to clear.
ContactValues = Mapping[str, str | None]


def _normalized(values: ContactValues) -> dict[str, str | None]:
    clean: dict[str, str | None] = {}
    for name, raw in values.items():
        spec = STANDARD_FIELDS.get(name)
        if spec is None:
            raise ValidationFailed("unknown field", field=name)
        value = spec.normalize(raw) if raw is not None else None
        clean[name] = value or None
    return clean


def _assign(contact: Contact, keys: TenantKeys, values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        spec = STANDARD_FIELDS[name]
        setattr(contact, name, value)
        if spec.index is not IndexKind.NONE:
            token = keys.blind_index(spec.index_label, value) if value is not None else None
            setattr(contact, spec.index_column, token)


def _check_unique(
    session: Session, contact: Contact, *, exclude_id: uuid.UUID | None = None
) -> None:
    for name in INDEXED_FIELDS:
        spec = STANDARD_FIELDS[name]
        token = getattr(contact, spec.index_column)
        if spec.index is not IndexKind.UNIQUE or token is None:
            continue
        column = getattr(Contact, spec.index_column)
        query = select(Contact.id).where(Contact.tenant_id == contact.tenant_id, column == token)
        if exclude_id is not None:
            query = query.where(Contact.id != exclude_id)
        # The pending change must not flush (and hit the unique index) before we look.
        with session.no_autoflush:
            taken = session.scalar(query) is not None
        if taken:
            label = name.replace("_", " ")
            raise Conflict(f"another contact has this {label}", field=name)


def _flush_unique(session: Session, contact: Contact, *, new: bool) -> None:
    """Flush inside a savepoint: a concurrent writer that won the race on a unique
    index becomes the same 409 as the pre-check, not a 500."""
    try:
        with session.begin_nested():
            if new:
                session.add(contact)
            session.flush()
    except IntegrityError:
        _check_unique(session, contact, exclude_id=None if new else contact.id)
        raise Conflict("another contact has the same email or external id") from None


def create_contact(
    session: Session, keys: TenantKeys, *, values: ContactValues, actor: audit.Actor
) -> Contact:
    clean = {name: value for name, value in _normalized(values).items() if value is not None}
    contact = Contact(id=new_id(), tenant_id=keys.tenant_id)
    _assign(contact, keys, clean)
    _check_unique(session, contact)
    _flush_unique(session, contact, new=True)
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action="contact.create",
        object_type="contact",
        object_id=contact.id,
        details={"fields": sorted(clean)},
    )
    return contact


def _contact_query(tenant_id: uuid.UUID, *, with_phi: bool) -> Select[Contact]:
    query = select(Contact).where(Contact.tenant_id == tenant_id)
    if not with_phi:
        # Without permission to see PHI, never even decrypt it.
        query = query.options(
            load_only(
                Contact.id,
                Contact.tenant_id,
                Contact.journey_stage,
                Contact.language,
                Contact.timezone,
                Contact.created_at,
                Contact.updated_at,
            )
        )
    return query


def get_contact(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID, *, with_phi: bool = True
) -> Contact:
    contact = session.scalar(
        _contact_query(tenant_id, with_phi=with_phi).where(Contact.id == contact_id)
    )
    if contact is None:
        survivor = merge.merged_into(session, tenant_id, contact_id)
        if survivor is not None:
            raise merge.ContactMerged(survivor)
        raise NotFound("no such contact")
    return contact


def list_contacts(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    after: uuid.UUID | None = None,
    limit: int = 100,
    with_phi: bool = True,
    journey_stage: str | None = None,
    list_id: uuid.UUID | None = None,
) -> list[Contact]:
    """One page in id order (ids are time-ordered UUIDv7); ``after`` is the cursor.

    ``journey_stage`` and ``list_id`` (current members of that list) narrow the page
    with plain column conditions: neither is PHI, and both are indexed."""
    query = _contact_query(tenant_id, with_phi=with_phi).order_by(Contact.id)
    if after is not None:
        query = query.where(Contact.id > after)
    if journey_stage is not None:
        query = query.where(Contact.journey_stage == journey_stage)
    if list_id is not None:
        query = query.where(
            exists().where(
                ListMembership.tenant_id == tenant_id,
                ListMembership.list_id == list_id,
                ListMembership.contact_id == Contact.id,
                ListMembership.left_at.is_(None),
            )
        )
    return list(session.scalars(query.limit(limit)))


def find_contacts(
    session: Session, keys: TenantKeys, *, field: str, value: str, limit: int = 100
) -> list[Contact]:
    """Exact look-up by an indexed identifier (email, phone, external id) or by an
    external id of a kind (``mrn``, ``crm``): a blind-index match, never a scan."""
    if field in IDENTIFIER_KINDS:
        return _find_by_identifier(session, keys, kind=field, value=value, limit=limit)
    if field not in INDEXED_FIELDS:
        choices = ", ".join((*INDEXED_FIELDS, *IDENTIFIER_KINDS))
        raise ValidationFailed(f"contacts can be looked up by {choices}", field=field)
    spec = STANDARD_FIELDS[field]
    token = keys.blind_index(spec.index_label, spec.normalize(value))
    column = getattr(Contact, spec.index_column)
    query = (
        select(Contact)
        .where(Contact.tenant_id == keys.tenant_id, column == token)
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _find_by_identifier(
    session: Session, keys: TenantKeys, *, kind: str, value: str, limit: int
) -> list[Contact]:
    cleaned = value.strip()
    if not cleaned:
        raise ValidationFailed("enter an identifier to look up", field=kind)
    token = identifier_token(keys, kind, cleaned)
    query = (
        select(Contact)
        .join(ContactIdentifier, ContactIdentifier.contact_id == Contact.id)
        .where(
            Contact.tenant_id == keys.tenant_id,
            ContactIdentifier.tenant_id == keys.tenant_id,
            ContactIdentifier.kind == kind,
            ContactIdentifier.value_index == token,
        )
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def update_contact(
    session: Session,
    keys: TenantKeys,
    *,
    contact_id: uuid.UUID,
    changes: ContactValues,
    actor: audit.Actor,
) -> tuple[Contact, list[str]]:
    """Apply changes (None clears a field); returns the contact and the changed field names."""
    clean = _normalized(changes)
    contact = get_contact(session, keys.tenant_id, contact_id)
    changed = {name: value for name, value in clean.items() if getattr(contact, name) != value}
    if not changed:
        return contact, []
    _assign(contact, keys, changed)
    contact.updated_at = utcnow()
    _check_unique(session, contact, exclude_id=contact.id)
    _flush_unique(session, contact, new=False)
    names = sorted(changed)
    from carepost.workflows.wakeups import on_fields_changed  # runs waiting for a change

    on_fields_changed(session, keys.tenant_id, {name: [contact.id] for name in names})
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action="contact.update",
        object_type="contact",
        object_id=contact.id,
        details={"fields": names},
    )
    return contact, names


def delete_contact(
    session: Session, *, tenant_id: uuid.UUID, contact_id: uuid.UUID, actor: audit.Actor
) -> None:
    contact = get_contact(session, tenant_id, contact_id, with_phi=False)
    # Tokens have no foreign key to cascade (migration 0017): they go explicitly.
    session.execute(
        delete(sync.TOKEN_TABLE).where(
            sync.TOKEN_TABLE.c.tenant_id == tenant_id, sync.TOKEN_TABLE.c.contact_id == contact.id
        )
    )
    session.delete(contact)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.delete",
        object_type="contact",
        object_id=contact_id,
    )


def record_phi_view(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: audit.Actor,
    contacts: Sequence[Contact],
    via: str,
) -> None:
    """Audit a disclosure of contacts' PHI: one event naming the contact, or, for a
    page of several, one event with their count and ids. Never the values."""
    if not contacts:
        return
    details: dict[str, object] = {"via": via}
    if via in PAGE_VIEWS:
        details |= {"count": len(contacts), "contact_ids": [str(c.id) for c in contacts]}
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.view_phi",
        object_type="contact",
        # One contact is named as the event's object, so filtering the trail by
        # contact finds it; a page names its contacts in the details.
        object_id=contacts[0].id if len(contacts) == 1 else "",
        details=details,
    )
