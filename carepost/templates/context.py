"""What a template sees: the contact's fields, per-message data and the organization.

A :class:`ContactView` is a contact's decrypted values, read once by the caller (the
outbox, a preview) and passed in; the template reaches them as ``contact.first_name``
and custom fields as ``contact.custom.<key>`` (or ``contact.<key>``: custom keys never
collide with the standard names, see ``carepost.contacts.custom_fields.RESERVED_KEYS``).
A field without a value is *undefined*, not empty, so ``{{ contact.first_name }}``
fails for a contact without a first name unless the template says
``| default("there")``.

Inside the sandbox, mappings become :class:`Record` objects: they answer ``.key`` and
``["key"]`` and nothing else, so ``contact.items()`` cannot read every field at once
behind the PHI detector's back, and ``data.items`` is the data's ``items`` key, not
a dict method.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from carepost.contacts import service as contacts
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.models import Contact
from carepost.crypto.keyring import TenantKeys

# Contact columns that are not PHI and are in clear (segment rules, language, quiet hours).
PLAIN_CONTACT_FIELDS = ("journey_stage", "language", "timezone")
CONTACT_FIELDS = (*STANDARD_FIELDS, *PLAIN_CONTACT_FIELDS)
# Names a template may use that per-message data cannot replace.
RESERVED_NAMES = frozenset({"contact", "organization"})
MAX_DATA_DEPTH = 20


@dataclass(frozen=True)
class ContactView:
    """A contact's decrypted values for rendering: standard fields (``first_name`` …)
    and custom fields by key; only fields that hold a value are present."""

    id: uuid.UUID | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    custom: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, contact: Contact, known_custom: Sequence[str] | None = None) -> ContactView:
        """From a contact row read with its PHI; custom values of fields no longer
        defined (``known_custom``) are left out, as every read does."""
        values = {name: getattr(contact, name) for name in CONTACT_FIELDS}
        custom = dict(contact.custom or {})
        if known_custom is not None:
            allowed = set(known_custom)
            custom = {key: value for key, value in custom.items() if key in allowed}
        return cls(
            id=contact.id,
            fields={name: value for name, value in values.items() if value not in (None, "")},
            custom={key: value for key, value in custom.items() if value is not None},
        )


def load_contact_view(session: Session, keys: TenantKeys, contact_id: uuid.UUID) -> ContactView:
    """Read one contact's values for rendering (the caller audits any disclosure)."""
    contact = contacts.get_contact(session, keys.tenant_id, contact_id, with_phi=True)
    return ContactView.of(contact, list(load_schema(session, keys.tenant_id)))


class Record:
    """A read-only mapping as templates see it: ``.key`` and ``["key"]``, nothing else."""

    __slots__ = ("_values", "template_path")

    def __init__(self, values: Mapping[str, Any], path: str) -> None:
        self._values = values
        self.template_path = path

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __str__(self) -> str:
        return f"[{self.template_path}]"


def _wrap(value: Any, path: str, depth: int = 0) -> Any:
    if depth > MAX_DATA_DEPTH:
        return None
    if isinstance(value, Mapping):
        return Record({str(k): _wrap(v, f"{path}.{k}", depth + 1) for k, v in value.items()}, path)
    if isinstance(value, list | tuple):
        return [_wrap(item, path, depth + 1) for item in value]
    return value


def contact_record(contact: ContactView) -> Record:
    custom = Record(
        {k: _wrap(v, f"contact.custom.{k}") for k, v in contact.custom.items()}, "contact.custom"
    )
    values: dict[str, Any] = {k: _wrap(v, f"contact.{k}") for k, v in contact.custom.items()}
    values.update(contact.fields)
    values["custom"] = custom
    return Record(values, "contact")


def build_context(
    contact: ContactView | None,
    data: Mapping[str, Any],
    organization: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The template's variables: ``data`` at the top level (``unsubscribe_url`` …), then
    ``contact`` and ``organization``, which data cannot replace."""
    context = {str(k): _wrap(v, str(k)) for k, v in data.items() if k not in RESERVED_NAMES}
    if contact is not None:
        context["contact"] = contact_record(contact)
    if organization is not None:
        context["organization"] = Record(dict(organization), "organization")
    return context
