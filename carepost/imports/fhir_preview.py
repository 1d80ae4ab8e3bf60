"""The console's FHIR import before it runs: is the file FHIR at all, its first resources
mapped, and setting a held upload's options.

:func:`inspect_fhir` reads the stored upload through the same source the job runner
uses (:func:`carepost.imports.fhir.iter_fhir`, a stream: one record in memory at a
time) and stops as soon as it has the first records for the preview and has met a
``Patient``. A file it cannot take is refused *before* anything is queued, with the
reason (never a value of the file):

* nothing of it reads as FHIR JSON (a CSV file, a JSON array, an empty file, one
  document that is not valid JSON),
* it holds no Patient resource at all (a Bundle of Observations only; reading such a
  file stays cheap: entries that are not Patients are stepped over, not built),
* it is a Bundle that is not valid JSON to its end (cut short, or text after it):
  :func:`bundle_problem` steps through the whole document once with ijson's C
  parser, building nothing (tens of MiB/s), since the import would otherwise keep
  the Patients before the break. An NDJSON file is not checked so: each line is a
  record of its own, and a broken line is reported while the others import.

A file that passes imports as the runner reads it: valid Patients imported, each
invalid resource reported with its line (NDJSON) or entry index (Bundle), element
path and reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import ijson
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.contacts import custom_fields
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, NotFound
from carepost.imports.fhir import FhirOptions, iter_fhir
from carepost.imports.models import ImportJob, JobStatus
from carepost.imports.service import check_fhir_options
from carepost.imports.sources import RowError, SourceRow

PREVIEW_RECORDS = 5
NOT_A_PATIENT = re.compile(r"^not a Patient resource(?:: ([A-Za-z]+))?$")
# The reason iter_fhir gives when a Bundle stops being valid JSON part-way.
CUT_SHORT = "the file is not valid JSON from here on"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class PreviewRecord:
    """One record of the file as the import would take it."""

    number: int  # the NDJSON line, or the Bundle entry's 1-based index
    unit: str  # "line" (NDJSON) or "entry" (a Bundle, or a single resource)
    item: dict[str, Any] | None  # the upsert item (PHI), None when refused
    errors: list[RowError] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.item is None or any(not error.left_out for error in self.errors)


@dataclass
class FhirInspection:
    """The first records of a FHIR upload, and why it cannot be imported (if it cannot)."""

    records: list[PreviewRecord] = field(default_factory=list)
    problem: str = ""  # "" when the file can be imported
    other_types: list[str] = field(default_factory=list)  # resource types met besides Patient


def _is_patient(row: SourceRow) -> bool:
    """A Patient resource, valid or not (its errors name ``Patient...`` paths)."""
    return row.item is not None or any(error.column.startswith("Patient") for error in row.errors)


def _unit(row: SourceRow) -> str:
    # NDJSON's position is the byte offset past the line (always more than the line
    # number); a Bundle's is the count of entries consumed, i.e. the entry's index.
    return "entry" if row.position == row.line else "line"


def inspect_fhir(
    stream: BinaryIO, options: FhirOptions, *, records: int = PREVIEW_RECORDS
) -> FhirInspection:
    """Read ``stream`` until ``records`` records and a Patient were met (or it ends)."""
    found = FhirInspection()
    patient = False
    others: set[str] = set()
    read = 0
    for row in iter_fhir(stream, options=options):
        read += 1
        if len(found.records) < records:
            found.records.append(PreviewRecord(row.line, _unit(row), row.item, list(row.errors)))
        if row.position == 0 and row.item is None and read == 1:
            found.problem = row.errors[0].reason if row.errors else "the file cannot be read"
            return found
        if any(error.reason.startswith(CUT_SHORT) for error in row.errors):
            found.problem = CUT_SHORT + " (cut short, or more text follows): nothing was imported"
            return found
        if _is_patient(row):
            patient = True
        else:
            for error in row.errors:
                kind = NOT_A_PATIENT.match(error.reason)
                if kind and kind.group(1):
                    others.add(kind.group(1))
        if patient and len(found.records) >= records:
            break
    found.other_types = sorted(others)
    if not patient:
        found.problem = _no_patient(found, read)
    return found


def is_bundle(found: FhirInspection) -> bool:
    """A JSON document (a Bundle, or one resource), not NDJSON."""
    return bool(found.records) and found.records[0].unit == "entry"


def bundle_problem(open_stream: Callable[[], BinaryIO]) -> str:
    """Why the JSON document of ``open_stream()`` is not valid to its end ("" if it is).
    The reason never quotes the file (ijson's messages do: they are not used)."""
    stream = open_stream()
    try:
        if stream.read(len(BOM)) != BOM:
            stream.seek(0)
        # A prefix no document has: the C backend then discards every event itself.
        for _ in ijson.items(stream, "\x00", buf_size=1 << 20):
            pass
    except ijson.JSONError:
        return "the file is not valid JSON to its end (cut short, or more text follows)"
    finally:
        stream.close()
    return ""


def _no_patient(found: FhirInspection, read: int) -> str:
    if read == 1 and found.records and found.records[0].errors and not found.other_types:
        return found.records[0].errors[0].reason  # one document, not readable as a resource
    if found.other_types:
        return f"the file holds no Patient resource, only {', '.join(found.other_types)}"
    return "the file holds no Patient resource"


def options_of(session: Session, tenant_id: uuid.UUID, mapping: dict[str, Any]) -> FhirOptions:
    """The FHIR options of a mapping, with the tenant's fields as defaults."""
    fields = set(custom_fields.load_schema(session, tenant_id))
    return FhirOptions.from_mapping(mapping, fields=fields)


def configure_fhir_upload(
    session: Session,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    mapping: dict[str, Any],
    match: str,
) -> ImportJob:
    """Set the options and match key of a held FHIR upload, before it is queued
    (:func:`carepost.imports.service.configure_upload` does this for a CSV file)."""
    job = session.execute(
        select(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.tenant_id == tenant_id)
        .with_for_update()
    ).scalar_one_or_none()
    if job is None:
        raise NotFound("no such import job")
    if job.status != JobStatus.UPLOADING:
        raise Conflict(f"the job is already {job.status}: its options are fixed")
    check_fhir_options(mapping, custom_fields.load_schema(session, tenant_id), match=match)
    job.mapping = mapping
    job.match = match
    job.updated_at = utcnow()
    return job
