"""The standard fields of a contact: which hold PHI, how each is normalized, which are indexed.

One table drives validation, blind indexing, uniqueness and PHI masking, so a new
field (the tenant-defined custom fields of issue 4) is one more row, not one more
code path. Normalizers return the canonical stored string or raise
:class:`ValidationFailed` naming the field; their messages never quote the value,
because the value is PHI.

* email: RFC 5322 address checked by email-validator (no DNS lookup), stored in
  its normalized form, lower-cased so that look-ups ignore case;
* phone: E.164 (ITU-T E.164, via phonenumbers), entered in international form;
* birth_date: ISO 8601 calendar date, not in the future, not before 1880.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from carepost.core.emails import is_plain_email
from carepost.core.errors import ValidationFailed
from carepost.core.text import has_forbidden_characters

EARLIEST_BIRTH_DATE = date(1880, 1, 1)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class IndexKind(StrEnum):
    """How a field's blind index is used."""

    NONE = "none"  # encrypted only
    LOOKUP = "lookup"  # exact-match look-ups (several contacts may share the value)
    UNIQUE = "unique"  # exact-match look-ups, and unique within a tenant


@dataclass(frozen=True)
class ContactField:
    name: str
    phi: bool
    normalize: Callable[[str], str]
    index: IndexKind = IndexKind.NONE
    max_length: int = 200

    @property
    def index_label(self) -> str:
        """The blind-index label: binds the token to this field (see TenantKeys.blind_index)."""
        return f"contacts.{self.name}"

    @property
    def index_column(self) -> str:
        return f"{self.name}_index"


def _plain(name: str, max_length: int = 200) -> Callable[[str], str]:
    def normalize(value: str) -> str:
        cleaned = value.strip()
        if has_forbidden_characters(cleaned):
            raise ValidationFailed("must be one line without control characters", field=name)
        if len(cleaned) > max_length:
            raise ValidationFailed(f"must be at most {max_length} characters", field=name)
        return cleaned

    return normalize


def normalize_email(value: str) -> str:
    cleaned = value.strip()
    if is_plain_email(cleaned):  # email-validator's answer, without its cost
        return cleaned.lower()
    try:
        checked = validate_email(cleaned, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed("not a valid email address", field="email") from None
    return checked.normalized.lower()


def normalize_phone(value: str) -> str:
    message = "not a valid phone number: use the international format, e.g. +14155552671"
    cleaned = value.strip()
    if not cleaned.startswith("+") or has_forbidden_characters(cleaned):
        raise ValidationFailed(message, field="phone")
    try:
        number = phonenumbers.parse(cleaned, None)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(message, field="phone") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed(message, field="phone")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_birth_date(value: str) -> str:
    cleaned = value.strip()
    try:
        if not _ISO_DATE.match(cleaned):
            raise ValueError
        parsed = date.fromisoformat(cleaned)
    except ValueError:
        raise ValidationFailed("use an ISO date: YYYY-MM-DD", field="birth_date") from None
    if parsed > datetime.now(UTC).date():
        raise ValidationFailed("the birth date is in the future", field="birth_date")
    if parsed < EARLIEST_BIRTH_DATE:
        raise ValidationFailed(
            f"the birth date is before {EARLIEST_BIRTH_DATE.isoformat()}", field="birth_date"
        )
    return parsed.isoformat()


STANDARD_FIELDS: dict[str, ContactField] = {
    spec.name: spec
    for spec in (
        ContactField("email", True, normalize_email, IndexKind.UNIQUE, 320),
        ContactField("phone", True, normalize_phone, IndexKind.LOOKUP, 32),
        ContactField("external_id", True, _plain("external_id"), IndexKind.UNIQUE),
        ContactField("first_name", True, _plain("first_name")),
        ContactField("last_name", True, _plain("last_name")),
        ContactField("birth_date", True, normalize_birth_date, IndexKind.NONE, 10),
    )
}
PHI_FIELDS = tuple(name for name, spec in STANDARD_FIELDS.items() if spec.phi)
INDEXED_FIELDS = tuple(
    name for name, spec in STANDARD_FIELDS.items() if spec.index is not IndexKind.NONE
)
