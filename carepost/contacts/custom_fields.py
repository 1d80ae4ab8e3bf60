"""The tenant-defined contact field schema: define, change and remove custom fields.

A field's key, type and granularity decide how its values are tokenized, so
they cannot change under stored data: changing the type or granularity of a
field that holds values is a 409, and so is removing a choice or unsealing a
sealed field (either would need every contact re-read). Sealing a field drops
its tokens at once; deleting a field drops its tokens and its definition, and
the values still in contacts' encrypted ``custom`` blobs are ignored on read and
dropped by the next write of each contact (docs/contacts-data.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, insert, literal, select
from sqlalchemy.orm import Session, aliased

from carepost.audit import service as audit
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.models import ContactToken, CustomField
from carepost.contacts.tokens import (
    DEFAULT_GRANULARITY,
    PRESENT,
    FieldType,
    granularities_for,
)
from carepost.contacts.values import FieldSpec
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
CHOICE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
MAX_FIELDS = 500
MAX_CHOICES = 2000
RESERVED_KEYS = frozenset(
    {*STANDARD_FIELDS, "id", "custom", "external_ids", "journey_stage", "language", "timezone"}
)


def spec_of(row: CustomField) -> FieldSpec:
    return FieldSpec(
        key=row.key,
        type=FieldType(row.type),
        phi=row.phi,
        sealed=row.sealed,
        granularity=row.granularity,
        past_only=row.past_only,
        choices=tuple(row.choices or ()),
    )


def load_schema(session: Session, tenant_id: uuid.UUID) -> dict[str, FieldSpec]:
    rows = session.scalars(select(CustomField).where(CustomField.tenant_id == tenant_id))
    return {row.key: spec_of(row) for row in rows}


def list_fields(session: Session, tenant_id: uuid.UUID) -> list[CustomField]:
    query = select(CustomField).where(CustomField.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(CustomField.key)))


def get_field(session: Session, tenant_id: uuid.UUID, field_id: uuid.UUID) -> CustomField:
    row = session.scalar(
        select(CustomField).where(CustomField.tenant_id == tenant_id, CustomField.id == field_id)
    )
    if row is None:
        raise NotFound("no such contact field")
    return row


def field_has_data(session: Session, tenant_id: uuid.UUID, key: str) -> bool:
    """Whether any contact holds a value (every value has a token, sealed too)."""
    query = select(
        exists().where(ContactToken.tenant_id == tenant_id, ContactToken.field_key == key)
    )
    return bool(session.scalar(query))


def _check_choices(choices: Sequence[str]) -> list[str]:
    if len(choices) > MAX_CHOICES:
        raise ValidationFailed(f"at most {MAX_CHOICES} choices", field="choices")
    for index, choice in enumerate(choices):
        if not CHOICE_PATTERN.match(choice):
            raise ValidationFailed(
                "a choice is 1-100 letters, digits or _ . : - (starting with a letter or digit)",
                field=f"choices/{index}",
            )
    if len(set(choices)) != len(choices):
        raise ValidationFailed("choices must be unique", field="choices")
    return list(choices)


def _check_shape(
    field_type: FieldType, granularity: str | None, choices: Sequence[str] | None
) -> tuple[str | None, list[str] | None]:
    allowed = granularities_for(field_type)
    if granularity is not None and granularity not in allowed:
        detail = (
            f"a {field_type.value} field's granularity is one of {', '.join(allowed)}"
            if allowed
            else f"a {field_type.value} field has no granularity"
        )
        raise ValidationFailed(detail, field="granularity")
    if allowed and granularity is None:
        granularity = DEFAULT_GRANULARITY[field_type]
    needs_choices = field_type in (FieldType.CHOICE, FieldType.MULTI_CHOICE)
    if needs_choices and not choices:
        raise ValidationFailed("a choice field needs its list of choices", field="choices")
    if not needs_choices and choices:
        raise ValidationFailed("only choice fields have choices", field="choices")
    return granularity, _check_choices(choices) if choices else None


def create_field(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    key: str,
    label: str,
    type: str,
    phi: bool = True,
    sealed: bool = False,
    granularity: str | None = None,
    past_only: bool = False,
    choices: Sequence[str] | None = None,
    actor: audit.Actor,
) -> CustomField:
    if not KEY_PATTERN.match(key):
        raise ValidationFailed(
            "a key is 1-40 lower-case letters, digits or underscores, starting with a letter",
            field="key",
        )
    if key in RESERVED_KEYS:
        raise ValidationFailed("this key is a standard contact field", field="key")
    field_type = FieldType(type)
    granularity, clean_choices = _check_shape(field_type, granularity, choices)
    if past_only and field_type not in (FieldType.DATE, FieldType.DATETIME):
        raise ValidationFailed("only date fields can refuse future dates", field="past_only")
    existing = session.scalars(
        select(CustomField.key).where(CustomField.tenant_id == tenant_id)
    ).all()
    if key in existing:
        raise Conflict("a field with this key exists", field="key")
    if len(existing) >= MAX_FIELDS:
        raise Conflict(f"an organization has at most {MAX_FIELDS} contact fields")
    row = CustomField(
        id=new_id(),
        tenant_id=tenant_id,
        key=key,
        label=label,
        type=field_type.value,
        phi=phi,
        sealed=sealed,
        granularity=granularity,
        past_only=past_only,
        choices=clean_choices,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact_field.create",
        object_type="contact_field",
        object_id=row.id,
        details={"key": key, "type": field_type.value, "phi": phi, "sealed": sealed},
    )
    return row


def update_field(
    session: Session,
    tenant_id: uuid.UUID,
    field_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    actor: audit.Actor,
) -> CustomField:
    """Change a field. ``changes`` holds only what the caller sent."""
    row = get_field(session, tenant_id, field_id)
    old_type, old_granularity = FieldType(row.type), row.granularity
    new_type = FieldType(changes.get("type", row.type))
    type_changed = new_type is not old_type
    granularity = changes.get("granularity", None if type_changed else old_granularity)
    choices = changes.get("choices", row.choices)
    if type_changed and new_type not in (FieldType.CHOICE, FieldType.MULTI_CHOICE):
        choices = changes.get("choices")
    granularity, clean_choices = _check_shape(new_type, granularity, choices)
    removed_choices = set(row.choices or ()) - set(clean_choices or ())
    unsealing = row.sealed and changes.get("sealed") is False
    reshaped = type_changed or granularity != old_granularity
    if (reshaped or removed_choices or unsealing) and field_has_data(session, tenant_id, row.key):
        if reshaped:
            what, at = "its type or granularity", "type" if type_changed else "granularity"
        elif removed_choices:
            what, at = "its choices (removing one)", "choices"
        else:
            what, at = "its sealing", "sealed"
        raise Conflict(
            f"contacts hold values of this field, so {what} cannot change: "
            "clear the values first, or define a new field",
            field=at,
        )
    past_only = changes.get("past_only", row.past_only)
    if past_only and new_type not in (FieldType.DATE, FieldType.DATETIME):
        raise ValidationFailed("only date fields can refuse future dates", field="past_only")
    wanted: dict[str, Any] = {
        "label": changes.get("label", row.label),
        "type": new_type.value,
        "phi": changes.get("phi", row.phi),
        "sealed": changes.get("sealed", row.sealed),
        "granularity": granularity,
        "past_only": past_only,
        "choices": clean_choices,
    }
    changed = sorted(name for name, value in wanted.items() if getattr(row, name) != value)
    for name in changed:
        setattr(row, name, wanted[name])
    if not changed:
        return row
    row.updated_at = utcnow()
    if row.sealed:
        # A sealed field is encrypted only: its bucket tokens go, its presence stays
        # (as the marker, which values with bucket tokens do not carry).
        _mark_presence(session, tenant_id, row.key)
        session.execute(
            delete(ContactToken).where(
                ContactToken.tenant_id == tenant_id,
                ContactToken.field_key == row.key,
                ContactToken.token != PRESENT,
            )
        )
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact_field.update",
        object_type="contact_field",
        object_id=row.id,
        details={"key": row.key, "changed": changed},
    )
    return row


def _mark_presence(session: Session, tenant_id: uuid.UUID, key: str) -> None:
    """Give the presence marker to every contact holding a value of ``key`` without it."""
    marked = aliased(ContactToken)
    holders = (
        select(
            ContactToken.tenant_id,
            ContactToken.contact_id,
            ContactToken.field_key,
            literal(PRESENT),
        )
        .where(
            ContactToken.tenant_id == tenant_id,
            ContactToken.field_key == key,
            ContactToken.token != PRESENT,
            ~exists().where(
                marked.tenant_id == ContactToken.tenant_id,
                marked.field_key == ContactToken.field_key,
                marked.contact_id == ContactToken.contact_id,
                marked.token == PRESENT,
            ),
        )
        .distinct()
    )
    session.execute(
        insert(ContactToken).from_select(["tenant_id", "contact_id", "field_key", "token"], holders)
    )


def delete_field(
    session: Session, tenant_id: uuid.UUID, field_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    row = get_field(session, tenant_id, field_id)
    session.execute(
        delete(ContactToken).where(
            ContactToken.tenant_id == tenant_id, ContactToken.field_key == row.key
        )
    )
    session.delete(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact_field.delete",
        object_type="contact_field",
        object_id=field_id,
        details={"key": row.key},
    )
