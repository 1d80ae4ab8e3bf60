"""The import wizard for a FHIR file (a JSON Bundle, NDJSON, or one Patient).

Step 1 is the wizard's upload (:mod:`carepost.web.imports_upload`) with "FHIR" chosen
as the source; once the file is stored, :func:`check_upload` reads it as the import
will (:func:`carepost.imports.fhir_preview.inspect_fhir`, a stream) and refuses, with
the reason on the upload page, a file that is not FHIR at all: nothing of it stays,
nothing is queued.

Step 2 (``/imports/{id}/mapping`` of a FHIR job) shows the first resources mapped to
contact fields (name, email, phone, birth date, gender, address, identifiers,
language) and the options of the mapping. Values are PHI: the page opens with them
masked (each cell only says whether the resource gives a value), and a person holding
``phi:read`` presses "Show the values" (``POST /imports/{id}/reveal``, CSRF-checked),
which answers the same page with the values and records ``import.samples_viewed``
(the job and the record count, never a value), as the contact page's reveal does.
Problems of each record (element path and reason, never a value) are shown to all.

Posting the options queues the job; step 3 is the CSV wizard's progress page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import Response

from carepost.audit import service as audit
from carepost.contacts import custom_fields
from carepost.contacts.prepare import MATCH_KEYS
from carepost.core.errors import FieldError, ValidationFailed
from carepost.imports import fhir_preview, service, storage
from carepost.imports.fhir_patient import FIELD_OPTIONS, FhirOptions
from carepost.imports.fhir_preview import FhirInspection, PreviewRecord, inspect_fhir
from carepost.imports.models import ImportJob
from carepost.imports.runner import check_file_start
from carepost.web.console import Console, sentence

FHIR = "fhir"
PHI_PERMISSION = "phi:read"
FIELD_OPTION_LABELS = {
    "gender_field": "Gender",
    "birth_year_field": "Birth year (partial birth dates)",
    "postal_code_field": "Postal code (home address)",
    "state_field": "State (home address)",
    "city_field": "City (home address)",
    "active_field": "Active (Patient.active)",
    "deceased_field": "Deceased",
    "deceased_date_field": "Date of death",
}
NOT_FHIR = "this is not a FHIR file we can import: "
# The options shown next to their own input (besides the field options).
OPTION_NAMES = ("match", "default_region", "identifier_systems")
PREVIEW_COLUMNS = (
    "Resource id",
    "Name",
    "Email",
    "Phone",
    "Birth date",
    "Gender",
    "Address",
    "Identifiers",
    "Language",
)


@dataclass
class FhirForm:
    """The options of a FHIR import as the page shows them."""

    match: str
    default_region: str
    patient_id_as_external_id: bool
    suppress_deceased: bool
    fields: dict[str, str]  # option -> custom field key, "" for none
    identifier_systems: str  # "URI = mrn" lines
    errors: dict[str, str] = field(default_factory=dict)  # option or "match" -> message
    general: list[str] = field(default_factory=list)


@dataclass
class PreviewRow:
    label: str  # "Line 3" or "Entry 2"
    status: str
    refused: bool
    cells: list[str]  # one per PREVIEW_COLUMNS ("" when the resource gives no value)
    problems: list[str]


def default_form(options: FhirOptions) -> FhirForm:
    return FhirForm(
        match="external_id" if options.patient_id_as_external_id else "email",
        default_region=options.default_region,
        patient_id_as_external_id=options.patient_id_as_external_id,
        suppress_deceased=options.suppress_deceased,
        fields={name: getattr(options, name) or "" for name in FIELD_OPTIONS},
        identifier_systems="\n".join(f"{s} = {k}" for s, k in options.identifier_systems.items()),
    )


def posted_form(data: dict[str, str]) -> FhirForm:
    return FhirForm(
        match=data.get("match", ""),
        default_region=data.get("default_region", "").strip(),
        patient_id_as_external_id=data.get("patient_id_as_external_id") == "on",
        suppress_deceased=data.get("suppress_deceased") == "on",
        fields={name: data.get(name, "") for name in FIELD_OPTIONS},
        identifier_systems=data.get("identifier_systems", ""),
    )


def mapping_of(form: FhirForm) -> dict[str, Any]:
    """The job's mapping JSON (FhirOptions' keys); a system line that cannot be read
    raises ValidationFailed on ``mapping/identifier_systems``."""
    systems: dict[str, str] = {}
    for line in form.identifier_systems.splitlines():
        if not line.strip():
            continue
        uri, sep, kind = line.rpartition("=")
        if not sep or not uri.strip():
            raise ValidationFailed(
                "write one identifier system a line: its URI = mrn (or crm)",
                field="mapping/identifier_systems",
            )
        systems[uri.strip()] = kind.strip()
    mapping: dict[str, Any] = {
        "default_region": form.default_region,
        "patient_id_as_external_id": form.patient_id_as_external_id,
        "suppress_deceased": form.suppress_deceased,
        "identifier_systems": systems,
    }
    for name, key in form.fields.items():
        mapping[name] = key or None
    return mapping


def place_errors(form: FhirForm, failed: ValidationFailed) -> None:
    errors = failed.errors or [FieldError("", failed.detail)]
    for error in errors:
        name = error.field.removeprefix("#/").removeprefix("body/").removeprefix("mapping/")
        if name in OPTION_NAMES or name in form.fields:
            form.errors.setdefault(name, sentence(error.message))
        else:
            form.general.append(sentence(error.message))


def _options(console: Console, mapping: dict[str, Any]) -> FhirOptions:
    with console.session() as session:
        return fhir_preview.options_of(session, console.principal.tenant_id, mapping)


def inspect_upload(console: Console, job_id: uuid.UUID, options: FhirOptions) -> FhirInspection:
    """The first records of the stored upload, read as a stream."""
    stream = storage.open_upload(console.runtime, console.principal.keys, job_id)
    try:
        return inspect_fhir(stream, options)
    finally:
        stream.close()


def check_upload(console: Console, job_id: uuid.UUID, file_format: str) -> None:
    """Refuse a file chosen as FHIR that is not (run by the upload before keeping it)."""
    if file_format != FHIR:
        return
    found = inspect_upload(console, job_id, _options(console, {}))
    if not found.problem and fhir_preview.is_bundle(found):
        found.problem = fhir_preview.bundle_problem(
            lambda: storage.open_upload(console.runtime, console.principal.keys, job_id)
        )
    if found.problem:
        raise ValidationFailed(NOT_FHIR + found.problem, field="file")


def _cell(value: Any, revealed: bool) -> str:
    if value in (None, "", [], {}):
        return ""
    return str(value) if revealed else "given"


def preview_row(record: PreviewRecord, options: FhirOptions, *, revealed: bool) -> PreviewRow:
    item = record.item or {}
    custom = item.get("custom") or {}
    name = " ".join(str(item[k]) for k in ("first_name", "last_name") if item.get(k))
    address = ", ".join(
        str(custom[key])
        for key in (options.city_field, options.state_field, options.postal_code_field)
        if key and custom.get(key) not in (None, "")
    )
    identifiers = ", ".join(
        f"{kind.upper()} {value}" if revealed else kind.upper()
        for kind, value in sorted((item.get("external_ids") or {}).items())
    )
    values = [
        item.get("external_id"),
        name,
        item.get("email"),
        item.get("phone"),
        item.get("birth_date"),
        custom.get(options.gender_field) if options.gender_field else None,
        address,
        identifiers,
        item.get("language"),
    ]
    cells = [_cell(value, revealed) for value in values]
    if identifiers and not revealed:
        cells[7] = identifiers  # the kinds only (MRN, CRM), not the values
    if record.refused:
        status = "not imported"
    elif record.errors:
        status = "imported, some elements left out"
    else:
        status = "imported"
    problems = [
        f"{error.column}: {sentence(error.reason)}" if error.column else sentence(error.reason)
        for error in record.errors
    ]
    return PreviewRow(
        f"{record.unit.capitalize()} {record.number}",
        status,
        record.refused,
        cells if not record.refused else [""] * len(cells),
        problems,
    )


def field_choices(console: Console) -> list[str]:
    with console.session() as session:
        return sorted(custom_fields.load_schema(session, console.principal.tenant_id))


def render_page(
    console: Console,
    job: ImportJob,
    form: FhirForm,
    *,
    revealed: bool = False,
    status: int = 200,
) -> Response:
    """Step 2 of a FHIR import; with ``revealed`` (phi:read) the values are shown and the
    view is audited first. ValidationFailed when the stored file cannot be imported."""
    keys = field_choices(console)
    try:
        options = FhirOptions.from_mapping(mapping_of(form), fields=set(keys))
    except ValidationFailed:  # the form's errors are shown; preview with the defaults
        options = FhirOptions.from_mapping({}, fields=set(keys))
    revealed = revealed and console.can(PHI_PERMISSION)
    found = inspect_upload(console, job.id, options)
    if found.problem:
        raise ValidationFailed(NOT_FHIR + found.problem, field="file")
    rows = [preview_row(record, options, revealed=revealed) for record in found.records]
    if revealed and rows:
        _audit_reveal(console, job, len(rows))
    return console.render(
        "imports/fhir.html",
        status=status,
        job=job,
        form=form,
        rows=rows,
        columns=PREVIEW_COLUMNS,
        revealed=revealed,
        match_keys=MATCH_KEYS,
        field_options=[(name, FIELD_OPTION_LABELS[name]) for name in FIELD_OPTIONS],
        field_keys=keys,
        title="Check the preview",
    )


def _audit_reveal(console: Console, job: ImportJob, count: int) -> None:
    with console.session() as session:
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="import.samples_viewed",
            object_type="import_job",
            object_id=job.id,
            details={"rows": count, "format": FHIR},
        )


def start(console: Console, job: ImportJob, form: FhirForm, first: bytes) -> None:
    """Set the options and queue the job; ValidationFailed names the option at fault."""
    mapping = mapping_of(form)
    with console.session() as session:
        held = fhir_preview.configure_fhir_upload(
            session, console.principal.tenant_id, job.id, mapping=mapping, match=form.match
        )
        check_file_start(session, held, first)
        service.queue_upload(session, held, file_size=held.file_size, actor=console.principal.actor)
