"""The import wizard: upload a CSV or FHIR file, map it, watch the job run.

1. ``/imports/new`` → ``POST /imports/upload``: the file streams into a held job
   (:mod:`carepost.web.imports_upload`), never read whole here. The form's source
   (``format``: ``csv`` or ``fhir``) decides the job's format; a FHIR file that is not
   FHIR at all is refused there, nothing kept. Step 2 of a FHIR file is its preview
   and options (:mod:`carepost.web.imports_fhir`, with ``POST /imports/{id}/reveal``
   for its values); a CSV file's is described next.
2. ``/imports/{id}/mapping``: the header's columns, each with a field to feed
   (prefilled by the same default as the API: a header that names a field), the
   match key and the date format. A few sample rows help choose; they are PHI,
   so only people holding ``phi:read`` see them, and that view is audited
   (``import.samples_viewed``, which names the job and the row count, never a
   value). Posting queues the job through the import service, which checks the
   mapping against the file's header; problems are shown next to their column.
3. ``/imports/{id}``: the job, whose progress fragment polls every 2 seconds
   (HTMX) until the job ends, then shows the counts, the first errors (line,
   column, reason: never a value) and the link to the error report, the API's
   own CSV (``/api/v1/imports/{id}/errors.csv``, formula cells neutralized).

Importing needs ``contacts:write``; seeing jobs ``contacts:read``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from carepost.audit import service as audit
from carepost.contacts import custom_fields
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.prepare import ATTRIBUTES, IDENTIFIER_KINDS, MATCH_KEYS
from carepost.core.errors import Conflict, FieldError, ValidationFailed
from carepost.imports import fhir_preview, service, storage
from carepost.imports.csv_source import CsvReader
from carepost.imports.mapping import DATE_FORMATS, header_key
from carepost.imports.models import ImportJob, ImportRowError, JobStatus
from carepost.imports.runner import check_file_start
from carepost.web import imports_fhir
from carepost.web.console import (
    Console,
    form_data,
    format_time,
    page,
    parse_id,
    redirect,
    sentence,
)
from carepost.web.imports_upload import WIZARD_FORMATS, receive_upload, size_text, too_large
from carepost.web.tables import Column, Table
from carepost.web.views import alert_response

router = APIRouter(include_in_schema=False)
Reader = Annotated[Console, Depends(page("contacts:read"))]
Writer = Annotated[Console, Depends(page("contacts:write"))]

SAMPLE_ROWS = 3
FIRST_ERRORS = 20
POLL = "every 2s"
STATUS_LABELS = {
    JobStatus.UPLOADING: "awaiting mapping",
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "running",
    JobStatus.PAUSED: "paused",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
MATCH_LABELS = {
    "email": "Email address",
    "external_id": "External id",
    "mrn": "Medical record number (MRN)",
    "crm": "CRM id",
}
DATE_FORMAT_LABELS = {"iso": "YYYY-MM-DD only", "us": "YYYY-MM-DD or MM/DD/YYYY (US)"}


def status_label(job: ImportJob) -> str:
    return STATUS_LABELS.get(job.status, job.status)


JOB_TABLE = Table(
    caption="Imports, newest first",
    id="import",
    empty="No imports yet.",
    columns=(
        # As text, so that the cell links to the job (time cells are never links).
        Column("Started", lambda j: format_time(j.created_at), link=lambda j: f"/imports/{j.id}"),
        Column("Format", lambda j: j.format, kind="code"),
        Column("Status", status_label, kind="badge"),
        Column("Rows read", lambda j: j.rows_read, kind="number"),
        Column("Created", lambda j: j.created, kind="number"),
        Column("Updated", lambda j: j.updated, kind="number"),
        Column("Unchanged", lambda j: j.unchanged, kind="number"),
        Column("Errors", lambda j: j.errored, kind="number"),
    ),
)


@dataclass(frozen=True)
class Target:
    value: str
    label: str
    group: str


def targets(schema_keys: list[str]) -> list[Target]:
    """What a column may feed, grouped as the select shows them."""
    contact = [*STANDARD_FIELDS, *ATTRIBUTES]
    found = [Target(name, name.replace("_", " ").capitalize(), "Contact") for name in contact]
    found += [Target(kind, MATCH_LABELS[kind], "External ids") for kind in IDENTIFIER_KINDS]
    found += [Target(key, key, "Custom fields") for key in sorted(schema_keys)]
    return found


@dataclass
class MappingColumn:
    index: int
    name: str
    target: str  # the field key it feeds; "" to ignore it
    samples: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class MappingForm:
    columns: list[MappingColumn]
    match: str
    date_format: str
    targets: list[Target]
    show_samples: bool
    sample_count: int = 0
    errors: list[str] = field(default_factory=list)
    match_error: str = ""


def _held_job(console: Console, job_id: str) -> tuple[ImportJob, list[str]]:
    with console.session() as session:
        job = service.get_job(session, console.principal.tenant_id, parse_id(job_id))
        schema = custom_fields.load_schema(session, job.tenant_id)
        session.expunge(job)
    return job, sorted(schema)


def _read_start(console: Console, job: ImportJob, rows: int) -> tuple[list[str], list[list[str]]]:
    """The header and the first ``rows`` records, read from the stored upload as a stream."""
    stream = storage.open_upload(console.runtime, console.principal.keys, job.id)
    try:
        reader = CsvReader(stream)
        samples = [r.cells for r in islice(iter(reader), rows) if not r.error] if rows else []
        return reader.header, samples
    finally:
        stream.close()


def _mapping_form(
    console: Console,
    job: ImportJob,
    schema_keys: list[str],
    chosen: dict[str, Any] | None,
    *,
    samples_wanted: bool,
) -> MappingForm:
    show_samples = samples_wanted and console.can("phi:read")
    header, samples = _read_start(console, job, SAMPLE_ROWS if show_samples else 0)
    fields = {*STANDARD_FIELDS, *IDENTIFIER_KINDS, *ATTRIBUTES, *schema_keys}
    by_key = {header_key(name): name for name in sorted(fields)}
    columns: list[MappingColumn] = []
    seen: set[str] = set()
    for index, name in enumerate(header):
        if not name or name in seen:
            continue  # only a header name's first column can be mapped
        seen.add(name)
        if chosen is not None:
            default = chosen.get(f"col_{index}", "")
        else:
            default = by_key.get(header_key(name), "")
        column = MappingColumn(index, name, default if isinstance(default, str) else "")
        if show_samples:
            column.samples = [row[index] if index < len(row) else "" for row in samples]
        columns.append(column)
    match = (chosen or {}).get("match") or _default_match(columns)
    date_format = (chosen or {}).get("date_format") or "iso"
    return MappingForm(
        columns,
        str(match),
        str(date_format),
        targets(schema_keys),
        show_samples,
        len(samples),
    )


def _default_match(columns: list[MappingColumn]) -> str:
    mapped = {c.target for c in columns}
    return next((key for key in MATCH_KEYS if key in mapped), "email")


def _audit_samples(console: Console, job: ImportJob, count: int) -> None:
    if not count:
        return
    with console.session() as session:
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="import.samples_viewed",
            object_type="import_job",
            object_id=job.id,
            details={"rows": count},
        )


@router.get("/imports")
def imports_page(console: Reader) -> Response:
    with console.session() as session:
        jobs = service.list_jobs(session, console.principal.tenant_id, after=None, limit=100)
    return console.render("imports/list.html", table=JOB_TABLE, rows=jobs, title="Imports")


@router.get("/imports/new")
def new_import_page(console: Writer) -> Response:
    return _upload_page(console)


def _upload_page(
    console: Console, error: str = "", status: int = 200, source: str = "csv"
) -> Response:
    limit = console.runtime.settings.max_import_bytes
    return console.render(
        "imports/upload.html",
        status=status,
        error=error,
        source=source if source in WIZARD_FORMATS else "csv",
        limit=size_text(limit),
        max_bytes=limit,
        too_large=sentence(too_large(limit)),
        title="Import contacts",
    )


@router.post("/imports/upload")
async def upload(request: Request, console: Writer) -> Response:
    fields: dict[str, str] = {}
    try:
        job_id = await receive_upload(request, console, fields, imports_fhir.check_upload)
    except ValidationFailed as failed:
        source = fields.get("format", "csv")
        return _upload_page(console, sentence(failed.detail), status=422, source=source)
    return redirect(request, f"/imports/{job_id}/mapping")


@router.get("/imports/{job_id}/mapping")
def mapping_page(request: Request, job_id: str, console: Writer) -> Response:
    job, schema_keys = _held_job(console, job_id)
    if job.status != JobStatus.UPLOADING:
        return redirect(request, f"/imports/{job.id}")
    if job.format == imports_fhir.FHIR:
        return _fhir_page(console, job, revealed=False)
    try:
        form = _mapping_form(console, job, schema_keys, None, samples_wanted=True)
    except ValidationFailed as failed:
        return _unreadable(console, job, failed)
    _audit_samples(console, job, form.sample_count)
    return _render_mapping(console, job, form)


def _unreadable(console: Console, job: ImportJob, failed: ValidationFailed) -> Response:
    """A file whose header cannot be read: drop it and ask for another."""
    with console.runtime.database.session() as session:
        service.discard_upload(session, job.id)
    return _upload_page(console, sentence(failed.detail), status=422, source=job.format)


def _fhir_page(
    console: Console,
    job: ImportJob,
    *,
    revealed: bool,
    form: imports_fhir.FhirForm | None = None,
    status: int = 200,
) -> Response:
    """Step 2 of a FHIR import (:mod:`carepost.web.imports_fhir`)."""
    if form is None:
        with console.session() as session:
            options = fhir_preview.options_of(session, console.principal.tenant_id, {})
        form = imports_fhir.default_form(options)
    try:
        return imports_fhir.render_page(console, job, form, revealed=revealed, status=status)
    except ValidationFailed as failed:
        return _unreadable(console, job, failed)


@router.post("/imports/{job_id}/reveal")
def reveal_preview(
    request: Request,
    job_id: str,
    console: Writer,
    data: Annotated[dict[str, str | list[str]], Depends(form_data)],
) -> Response:
    """A FHIR preview with its values (``phi:read``; audited as ``import.samples_viewed``).
    The options chosen on the page so far are kept."""
    console.principal.require(imports_fhir.PHI_PERMISSION)
    job, _schema_keys = _held_job(console, job_id)
    if job.status != JobStatus.UPLOADING or job.format != imports_fhir.FHIR:
        return redirect(request, f"/imports/{job.id}")
    chosen = {k: v for k, v in data.items() if isinstance(v, str)}
    form = imports_fhir.posted_form(chosen) if "match" in chosen else None
    return _fhir_page(console, job, revealed=True, form=form)


def _render_mapping(
    console: Console, job: ImportJob, form: MappingForm, status: int = 200
) -> Response:
    return console.render(
        "imports/mapping.html",
        status=status,
        job=job,
        form=form,
        match_keys=[(key, MATCH_LABELS[key]) for key in MATCH_KEYS],
        date_formats=[(key, DATE_FORMAT_LABELS[key]) for key in DATE_FORMATS],
        title="Map the columns",
    )


def _mapping_of(form: MappingForm) -> dict[str, Any]:
    return {
        "columns": {c.name: (c.target or None) for c in form.columns},
        "date_format": form.date_format,
    }


def _place_errors(form: MappingForm, failed: ValidationFailed) -> None:
    by_name = {c.name: c for c in form.columns}
    errors = failed.errors or [FieldError("", failed.detail)]
    for error in errors:
        pointer = error.field.removeprefix("#/").removeprefix("body/")
        column = by_name.get(pointer.removeprefix("mapping/columns/"))
        if pointer.startswith("mapping/columns/") and column is not None:
            column.error = sentence(error.message)
        elif pointer == "match":
            form.match_error = sentence(error.message)
        else:
            form.errors.append(sentence(error.message))


@router.post("/imports/{job_id}/mapping")
def save_mapping(
    request: Request,
    job_id: str,
    console: Writer,
    data: Annotated[dict[str, str | list[str]], Depends(form_data)],
) -> Response:
    job, schema_keys = _held_job(console, job_id)
    if job.status != JobStatus.UPLOADING:
        return redirect(request, f"/imports/{job.id}")
    chosen = {k: v for k, v in data.items() if isinstance(v, str)}
    if job.format == imports_fhir.FHIR:
        return _start_fhir(request, console, job, chosen)
    # A failed post shows the columns again, not the values (nor audits a second view).
    form = _mapping_form(console, job, schema_keys, chosen, samples_wanted=False)
    first = _first_chunk(console, job.id)  # read before the transaction takes its locks
    try:
        with console.session() as session:
            held = service.configure_upload(
                session,
                console.principal.tenant_id,
                job.id,
                mapping=_mapping_of(form),
                match=form.match,
            )
            check_file_start(session, held, first)
            service.queue_upload(
                session, held, file_size=held.file_size, actor=console.principal.actor
            )
    except ValidationFailed as failed:
        _place_errors(form, failed)
        return _render_mapping(console, job, form, status=422)
    except Conflict:
        return redirect(request, f"/imports/{job.id}")
    return redirect(request, f"/imports/{job.id}")


def _start_fhir(
    request: Request, console: Console, job: ImportJob, chosen: dict[str, str]
) -> Response:
    form = imports_fhir.posted_form(chosen)
    first = _first_chunk(console, job.id)  # read before the transaction takes its locks
    try:
        imports_fhir.start(console, job, form, first)
    except ValidationFailed as failed:
        # The options again with their errors; the values are not shown (nor audited) again.
        imports_fhir.place_errors(form, failed)
        return _fhir_page(console, job, revealed=False, form=form, status=422)
    except Conflict:
        pass
    return redirect(request, f"/imports/{job.id}")


def _first_chunk(console: Console, job_id: uuid.UUID) -> bytes:
    stream = storage.open_upload(console.runtime, console.principal.keys, job_id)
    try:
        return stream.read(storage.CHUNK_BYTES)
    finally:
        stream.close()


def _job_state(console: Console, job_id: str) -> tuple[ImportJob, list[ImportRowError]]:
    with console.session() as session:
        job = service.get_job(session, console.principal.tenant_id, parse_id(job_id))
        errors: list[ImportRowError] = []
        if job.status in JobStatus.ENDED and job.errored:
            errors = service.list_errors(
                session, job.tenant_id, job.id, after=0, limit=FIRST_ERRORS
            )
        session.expunge_all()
    return job, errors


def _job_context(job: ImportJob, errors: list[ImportRowError]) -> dict[str, Any]:
    ended = job.status in JobStatus.ENDED
    return {
        "job": job,
        "errors": errors,
        "ended": ended,
        "status_text": status_label(job),
        "poll": None if ended or job.status == JobStatus.UPLOADING else POLL,
        "report_url": f"/api/v1/imports/{job.id}/errors.csv",
        "fhir": job.format == imports_fhir.FHIR,
    }


@router.get("/imports/{job_id}")
async def job_page(job_id: str, console: Reader) -> Response:
    job, errors = await run_in_threadpool(_job_state, console, job_id)
    return console.render("imports/job.html", title="Import", **_job_context(job, errors))


@router.get("/imports/{job_id}/progress")
async def job_progress(job_id: str, console: Reader) -> Response:
    job, errors = await run_in_threadpool(_job_state, console, job_id)
    return console.render("imports/progress.html", **_job_context(job, errors))


@router.post("/imports/{job_id}/cancel")
def cancel(request: Request, job_id: str, console: Writer) -> Response:
    try:
        with console.session() as session:
            service.cancel_job(
                session,
                console.principal.tenant_id,
                parse_id(job_id),
                actor=console.principal.actor,
            )
    except Conflict as refused:
        if console.htmx:
            return alert_response(console, sentence(refused.detail), status=409)
        raise
    return redirect(request, f"/imports/{job_id}")
