"""Mapping one FHIR R4 ``Patient`` to a contact upsert item, and the options that steer it.

The resource has already been validated with fhir.resources (see
:mod:`carepost.imports.fhir`); this module decides which of its elements become
which contact field (docs/fhir-import.md has the table). The item has the shape
accepted by :func:`carepost.contacts.prepare.prepare_contact`, holds only the
elements the resource has (an absent element leaves the stored value alone, it
does not clear it), and its standard fields are already normalized, so the
upsert only refuses what depends on the tenant (custom field types and choices,
identifier conflicts).

An element that is valid FHIR but cannot fill its contact field (a partial
birth date, a phone number that is not a real number, a language without a
BCP 47 code) is left out of the item and reported as a :class:`RowError` on its
FHIR path; the rest of the patient is imported. Reasons never quote the value.

``active`` and ``deceased[x]`` fill boolean (and date) custom fields when the
tenant has them; a deceased patient is moreover flagged so that the runner
suppresses the contact's email and phone (:func:`is_deceased`): no message of any
kind reaches the address of someone who died.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import phonenumbers
from fhir.resources.R4B.address import Address
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient, PatientCommunication

from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.prepare import IDENTIFIER_KINDS
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.imports.sources import RowError

# HL7 v2 table 0203 (identifier type); code MR is the medical record number.
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
BCP_47 = "urn:ietf:bcp:47"
# FHIR AdministrativeGender: a required binding that fhir.resources does not check.
GENDER_CODES = frozenset({"male", "female", "other", "unknown"})
# The same shape prepare_contact accepts for the language attribute.
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")
_PARTIAL_DATE = re.compile(r"^(\d{4})(-\d{2})?$")
# Name uses in order of preference; "old" names are never used.
_NAME_USES = {"official": 0, "usual": 1, None: 2}
_ADDRESS_USES = {"home": 0, None: 1}
# Options that name a custom contact field, and the key used when the job does not say.
FIELD_OPTIONS = {
    "gender_field": "gender",
    "birth_year_field": "birth_year",
    "postal_code_field": "postal_code",
    "state_field": "state",
    "city_field": "city",
    "active_field": "active",
    "deceased_field": "deceased",
    "deceased_date_field": "deceased_date",
}


@dataclass(frozen=True)
class FhirOptions:
    """How a FHIR import maps what is not a standard contact field (from the job's mapping)."""

    # Region assumed for phone numbers written in national format ("(617) 555-0123").
    default_region: str = "US"
    # Identifier.system URI -> "mrn" or "crm"; checked before the v2-0203 "MR" type.
    identifier_systems: Mapping[str, str] = field(default_factory=dict)
    # Patient.id (the source server's logical id) becomes the contact's external_id.
    patient_id_as_external_id: bool = True
    # Keys of the tenant's custom fields; None leaves the element out.
    gender_field: str | None = None  # string or choice (male, female, other, unknown)
    birth_year_field: str | None = None  # number: the year of a partial birthDate
    postal_code_field: str | None = None
    state_field: str | None = None
    city_field: str | None = None
    active_field: str | None = None  # boolean: Patient.active
    deceased_field: str | None = None  # boolean: deceasedBoolean, or true for a deceasedDateTime
    deceased_date_field: str | None = None  # date: the day of a full deceasedDateTime
    # A deceased patient's email and phone are suppressed (reason "deceased", every purpose).
    suppress_deceased: bool = True

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any] | None, *, fields: Collection[str] | None = None
    ) -> FhirOptions:
        """Options from a job's mapping JSON (keys as the attributes above).

        ``fields`` is the tenant's custom field keys: a field option the mapping
        leaves out then defaults to the field of the same idea (``gender``,
        ``postal_code``...) when the tenant has one, and a field the mapping names
        must exist. Every problem is reported together, named by option.
        """
        mapping = mapping or {}
        if not isinstance(mapping, Mapping):
            raise ValidationFailed("the FHIR mapping must be an object", field="mapping")
        known = {option.name for option in dataclasses.fields(cls)}
        errors = [
            FieldError(name, "unknown FHIR mapping option") for name in mapping if name not in known
        ]
        values: dict[str, Any] = {}
        region = mapping.get("default_region", cls.default_region)
        if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            errors.append(FieldError("default_region", "use a two-letter region code, e.g. US"))
        else:
            values["default_region"] = region.upper()
        values["identifier_systems"], problems = _identifier_systems(
            mapping.get("identifier_systems", {})
        )
        errors += problems
        as_external_id = mapping.get("patient_id_as_external_id", True)
        if not isinstance(as_external_id, bool):
            errors.append(FieldError("patient_id_as_external_id", "must be true or false"))
        values["patient_id_as_external_id"] = as_external_id is True
        suppress = mapping.get("suppress_deceased", True)
        if not isinstance(suppress, bool):
            errors.append(FieldError("suppress_deceased", "must be true or false"))
        values["suppress_deceased"] = suppress is not False
        for name, default in FIELD_OPTIONS.items():
            if name not in mapping:
                values[name] = default if fields is not None and default in fields else None
                continue
            key = mapping[name]
            if key is not None and not isinstance(key, str):
                errors.append(FieldError(name, "must be a contact field key or null"))
            elif key is not None and fields is not None and key not in fields:
                errors.append(FieldError(name, "no contact field has this key"))
            else:
                values[name] = key
        if errors:
            raise ValidationFailed(errors[0].message, errors=errors)
        return cls(**values)


def _identifier_systems(raw: Any) -> tuple[dict[str, str], list[FieldError]]:
    name = "identifier_systems"
    if not isinstance(raw, Mapping):
        return {}, [FieldError(name, "must be an object of identifier system URI to mrn or crm")]
    errors = []
    for system, kind in raw.items():
        if kind not in IDENTIFIER_KINDS:
            errors.append(FieldError(name, "each identifier system maps to mrn or crm"))
        elif not system or has_forbidden_characters(system):
            errors.append(FieldError(name, "an identifier system is a URI on one line"))
    return dict(raw), errors


@dataclass
class _Mapped:
    """The item being built for one patient and the elements left out of it."""

    item: dict[str, Any] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(RowError(path, reason, left_out=True))

    def custom(self, key: str, value: Any) -> None:
        self.item.setdefault("custom", {})[key] = value

    def standard(self, name: str, value: str, path: str) -> bool:
        """Set a standard field if its normalizer accepts the value (the upsert's own check)."""
        try:
            self.item[name] = STANDARD_FIELDS[name].normalize(value)
        except ValidationFailed as failed:
            self.fail(path, failed.detail)
            return False
        return True


def map_patient(patient: Patient, options: FhirOptions) -> tuple[dict[str, Any], list[RowError]]:
    """The upsert item of a validated Patient, and the elements that could not be used.

    Read from the model, not the JSON: fhir.resources coerces what pydantic's lax mode
    accepts (``"rank": "2"``, ``"preferred": "false"``) to the element's type."""
    mapped = _Mapped()
    if options.patient_id_as_external_id and patient.id:
        mapped.standard("external_id", patient.id, "Patient.id")
    _map_name(patient.name or [], mapped)
    _map_telecom(patient.telecom or [], mapped, options.default_region)
    _map_birth_date(patient.birthDate, mapped, options)
    _map_gender(patient.gender, mapped, options)
    _map_address(patient.address or [], mapped, options)
    _map_identifiers(patient.identifier or [], mapped, options)
    _map_language(patient.communication or [], mapped)
    _map_status(patient, mapped, options)
    return mapped.item, mapped.errors


def is_deceased(patient: Patient) -> bool:
    """``deceasedBoolean`` true, or any ``deceasedDateTime`` (a date of death)."""
    return patient.deceasedBoolean is True or patient.deceasedDateTime is not None


def _map_status(patient: Patient, mapped: _Mapped, options: FhirOptions) -> None:
    if options.active_field and patient.active is not None:
        mapped.custom(options.active_field, patient.active)
    known = patient.deceasedBoolean is not None or patient.deceasedDateTime is not None
    if options.deceased_field and known:
        mapped.custom(options.deceased_field, is_deceased(patient))
    moment = patient.deceasedDateTime
    if not options.deceased_date_field or moment is None:
        return
    if isinstance(moment, datetime):
        day = moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
        mapped.custom(options.deceased_date_field, day.isoformat())
    elif isinstance(moment, date):
        mapped.custom(options.deceased_date_field, moment.isoformat())
    else:  # a year or a month: the patient is still known to be deceased
        mapped.fail(
            "Patient.deceasedDateTime",
            "a partial date (year, or year and month) cannot fill a date field",
        )


Rank = tuple[float, ...]
Element = TypeVar("Element")


def _ranked(
    elements: Sequence[Element], key: Callable[[Element], Rank | None]
) -> list[tuple[int, Element]]:
    """(index, element) of the usable elements, best first (ties in file order);
    an element whose ``key`` is None is not usable."""
    found = []
    for index, element in enumerate(elements):
        rank = key(element)
        if rank is not None:
            found.append((rank, index, element))
    found.sort(key=lambda ranked: (ranked[0], ranked[1]))
    return [(index, element) for _rank, index, element in found]


def _map_name(names: Sequence[HumanName], mapped: _Mapped) -> None:
    def preference(name: HumanName) -> Rank | None:
        if name.use == "old" or not (name.given or name.family):
            return None
        return (_NAME_USES.get(name.use, 3),)

    for index, name in _ranked(names, preference)[:1]:
        path = f"Patient.name[{index}]"
        given = " ".join(part.strip() for part in name.given or [] if part and part.strip())
        if given:
            mapped.standard("first_name", given, f"{path}.given")
        if name.family:
            mapped.standard("last_name", name.family, f"{path}.family")


def _map_telecom(telecom: Sequence[ContactPoint], mapped: _Mapped, region: str) -> None:
    def ranked(
        systems: set[str], preferred: Callable[[ContactPoint], bool]
    ) -> list[tuple[int, ContactPoint]]:
        def rank(point: ContactPoint) -> Rank | None:
            if point.system not in systems or point.use == "old" or not point.value:
                return None
            return (0 if preferred(point) else 1, point.rank or float("inf"))

        return _ranked(telecom, rank)

    emails = ranked({"email"}, lambda point: False)
    # A phone that can take texts first: the system says sms, or its use says mobile.
    phones = ranked({"phone", "sms"}, lambda point: point.system == "sms" or point.use == "mobile")
    normalize_email = STANDARD_FIELDS["email"].normalize
    for name, candidates, normalize in (
        ("email", emails, normalize_email),
        ("phone", phones, lambda value: _phone(value, region)),
    ):
        found, problem = _first_usable(candidates, normalize)
        if found is not None:
            mapped.item[name] = found
        elif problem is not None:
            mapped.errors.append(problem)


def _first_usable(
    candidates: list[tuple[int, ContactPoint]], normalize: Callable[[str], str]
) -> tuple[str | None, RowError | None]:
    """The first value the contact field accepts; else the first one's problem (a second,
    unusable number is not worth its own report line)."""
    problem = None
    for index, point in candidates:
        try:
            return normalize(point.value or ""), None
        except ValidationFailed as failed:
            problem = problem or RowError(
                f"Patient.telecom[{index}].value", failed.detail, left_out=True
            )
    return None, problem


def _phone(value: str, region: str) -> str:
    """E.164, reading a number in ``region`` unless it is written in international form.
    The test is the phone field's own (carepost.contacts.fields.normalize_phone), which
    only reads international numbers: a valid number for phonenumbers."""
    message = f"not a valid phone number (national numbers are read as {region})"
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(message) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed(message)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _map_birth_date(value: date | str | None, mapped: _Mapped, options: FhirOptions) -> None:
    """A full date is a ``date`` (fhir.resources parsed it); a partial one stays text."""
    if not value:
        return
    path = "Patient.birthDate"
    if isinstance(value, date):
        mapped.standard("birth_date", value.isoformat(), path)
        return
    partial = _PARTIAL_DATE.match(value)
    if partial and options.birth_year_field:
        mapped.custom(options.birth_year_field, int(partial.group(1)))
    elif partial:
        mapped.fail(
            path,
            "a partial date (year, or year and month) cannot fill the birth date: "
            "map it to a number field with birth_year_field",
        )
    else:  # a text full date: fhir.resources left it unparsed; the field checks it
        mapped.standard("birth_date", value, path)


def _map_gender(code: str | None, mapped: _Mapped, options: FhirOptions) -> None:
    if not options.gender_field or code is None:
        return
    if code in GENDER_CODES:
        mapped.custom(options.gender_field, code)
    else:
        mapped.fail(
            "Patient.gender", "not an AdministrativeGender code: male, female, other, unknown"
        )


def _map_address(addresses: Sequence[Address], mapped: _Mapped, options: FhirOptions) -> None:
    if not (options.postal_code_field or options.state_field or options.city_field):
        return

    def preference(address: Address) -> Rank | None:
        if address.use == "old":
            return None
        return (_ADDRESS_USES.get(address.use, 2),)

    for _index, address in _ranked(addresses, preference)[:1]:
        for key, value in (
            (options.postal_code_field, address.postalCode),
            (options.state_field, address.state),
            (options.city_field, address.city),
        ):
            if key and value:
                mapped.custom(key, value)


def _is_medical_record_number(identifier: Identifier) -> bool:
    codings = (identifier.type.coding if identifier.type else None) or []
    return any(c.system == V2_0203 and c.code == "MR" for c in codings)


def _map_identifiers(
    identifiers: Sequence[Identifier], mapped: _Mapped, options: FhirOptions
) -> None:
    """MRN and CRM id: a configured system first, then the v2-0203 MR type; others ignored
    (a social security or driver's licence number never becomes a contact field)."""
    candidates: list[tuple[int, int, str]] = []  # (priority, index, kind)
    for index, identifier in enumerate(identifiers):
        if identifier.use == "old" or not identifier.value:
            continue
        kind = options.identifier_systems.get(identifier.system or "")
        if kind is not None:
            candidates.append((0, index, kind))
        elif _is_medical_record_number(identifier):
            candidates.append((1, index, "mrn"))
    external_ids: dict[str, str] = {}
    for _priority, index, kind in sorted(candidates):
        if kind in external_ids:
            continue
        value = (identifiers[index].value or "").strip()
        if not value or len(value) > 200 or has_forbidden_characters(value):
            mapped.fail(
                f"Patient.identifier[{index}].value", "must be 1-200 characters on one line"
            )
            continue
        external_ids[kind] = value
    if external_ids:
        mapped.item["external_ids"] = external_ids


def _map_language(communication: Sequence[PatientCommunication], mapped: _Mapped) -> None:
    def preference(entry: PatientCommunication) -> Rank:
        return (0 if entry.preferred else 1,)

    ranked = _ranked(communication, preference)
    for _index, entry in ranked:
        codings = (entry.language.coding if entry.language else None) or []
        codes = [c.code for c in codings if c.system == BCP_47]
        codes += [c.code for c in codings if c.system != BCP_47]
        code = next((code for code in codes if code and _LANGUAGE.match(code)), None)
        if code:
            mapped.item["language"] = code
            return
    if ranked:
        mapped.fail(
            f"Patient.communication[{ranked[0][0]}].language",
            "no BCP 47 language code (e.g. en or es-MX) to use as the contact's language",
        )
