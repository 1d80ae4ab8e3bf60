"""Import jobs: creating them, reading their state and errors, cancelling, pausing, claiming.

Running a job is :mod:`carepost.imports.runner`; storing its upload is
:mod:`carepost.imports.storage`. A job's mapping names columns and fields, and
its errors name lines, columns and reasons: nothing here ever holds a value of
the file, so jobs and errors are listed without PHI permissions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import custom_fields
from carepost.contacts.prepare import MATCH_KEYS
from carepost.contacts.values import FieldSpec
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from carepost.imports import storage
from carepost.imports.fhir_patient import FhirOptions
from carepost.imports.mapping import check_mapping
from carepost.imports.models import ImportJob, ImportRowError, JobStatus

# How long a worker holds a job without committing a batch before another may take it.
LEASE = timedelta(seconds=120)
# An upload that has not finished after this long was abandoned (the server died).
ABANDONED_UPLOAD = timedelta(hours=6)


def known_formats() -> tuple[str, ...]:
    from carepost.imports.runner import SOURCES

    return tuple(SOURCES)


def check_fhir_options(
    mapping: dict[str, Any], schema: Mapping[str, FieldSpec], *, match: str
) -> None:
    """A FHIR job's mapping is its options (carepost.imports.fhir_patient.FhirOptions)."""
    errors: list[FieldError] = []
    if match not in MATCH_KEYS:
        errors.append(FieldError("match", f"match on one of {', '.join(MATCH_KEYS)}"))
    try:
        FhirOptions.from_mapping(mapping, fields=set(schema))
    except ValidationFailed as failed:
        errors += [FieldError(f"mapping/{error.field}", error.message) for error in failed.errors]
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)


def create_job(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    format: str,
    mapping: dict[str, Any],
    match: str,
    actor: audit.Actor,
    source: str = "upload",
    file_size: int = 0,
) -> ImportJob:
    """A new job (status ``uploading`` for an upload, ``queued`` for a local file)."""
    formats = known_formats()
    if format not in formats:
        raise ValidationFailed(f"the format is one of {', '.join(formats)}", field="format")
    schema = custom_fields.load_schema(session, tenant_id)
    if format == "fhir":
        check_fhir_options(mapping, schema, match=match)
    else:
        check_mapping(mapping, schema, match=match)
    job = ImportJob(
        tenant_id=tenant_id,
        format=format,
        source=source,
        mapping=mapping,
        match=match,
        status=JobStatus.UPLOADING if source == "upload" else JobStatus.QUEUED,
        file_size=file_size,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    session.add(job)
    session.flush()
    return job


def queue_upload(session: Session, job: ImportJob, *, file_size: int, actor: audit.Actor) -> None:
    """The upload is complete: hand the job to the workers."""
    job.status = JobStatus.QUEUED
    job.file_size = file_size
    job.updated_at = utcnow()
    record_created(session, job, actor)


def hold_upload(session: Session, job: ImportJob, *, file_size: int) -> None:
    """The upload is stored but its mapping is still to be chosen (the console's import
    wizard): the job stays ``uploading`` (never claimed; dropped if abandoned)."""
    job.file_size = file_size
    job.updated_at = utcnow()


def configure_upload(
    session: Session,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    mapping: dict[str, Any],
    match: str,
) -> ImportJob:
    """Set the mapping and match key of a held upload, before it is queued."""
    job = _locked(session, tenant_id, job_id)
    if job.status != JobStatus.UPLOADING:
        raise Conflict(f"the job is already {job.status}: its mapping is fixed")
    check_mapping(mapping, custom_fields.load_schema(session, tenant_id), match=match)
    job.mapping = mapping
    job.match = match
    job.updated_at = utcnow()
    return job


def record_created(session: Session, job: ImportJob, actor: audit.Actor) -> None:
    columns = job.mapping.get("columns", {})
    audit.record(
        session,
        tenant_id=job.tenant_id,
        actor=actor,
        action="import.created",
        object_type="import_job",
        object_id=job.id,
        details={
            "format": job.format,
            "match": job.match,
            "source": job.source,
            "file_size": job.file_size,
            "mapped_fields": sorted(field for field in columns.values() if field),
        },
    )


def discard_upload(session: Session, job_id: uuid.UUID) -> None:
    """An upload that failed half-way: drop the job and every chunk it stored."""
    job = session.get(ImportJob, job_id)
    if job is not None:
        session.delete(job)


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("no such import job")
    return job


def list_jobs(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[ImportJob]:
    """Newest first (ids are time-ordered)."""
    query = select(ImportJob).where(ImportJob.tenant_id == tenant_id)
    if after is not None:
        query = query.where(ImportJob.id < after)
    return list(session.scalars(query.order_by(ImportJob.id.desc()).limit(limit)))


def list_errors(
    session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, after: int, limit: int
) -> list[ImportRowError]:
    get_job(session, tenant_id, job_id)
    query = (
        select(ImportRowError)
        .where(ImportRowError.job_id == job_id, ImportRowError.id > after)
        .order_by(ImportRowError.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def iter_errors(
    session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, page: int = 5000
) -> Iterator[ImportRowError]:
    """Every error of a job, in file order, a page at a time (for the CSV report)."""
    after = 0
    while True:
        rows = list_errors(session, tenant_id, job_id, after=after, limit=page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id


def end_job(
    session: Session, job: ImportJob, status: str, *, actor: audit.Actor, failure: str = ""
) -> None:
    """Finish a job (completed, failed, cancelled): drop its upload, keep counts and errors."""
    now = utcnow()
    job.status = status
    job.failure = failure
    job.finished_at = now
    job.updated_at = now
    job.lease_owner = ""
    job.lease_expires_at = None
    storage.delete_chunks(session, job.id)
    audit.record(
        session,
        tenant_id=job.tenant_id,
        actor=actor,
        action=f"import.{status}",
        object_type="import_job",
        object_id=job.id,
        outcome="failure" if status == JobStatus.FAILED else "success",
        reason=failure,
        details={
            "format": job.format,
            "rows_read": job.rows_read,
            "created": job.created,
            "updated": job.updated,
            "unchanged": job.unchanged,
            "errored": job.errored,
        },
    )


def _locked(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> ImportJob:
    job = session.execute(
        select(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.tenant_id == tenant_id)
        .with_for_update()
    ).scalar_one_or_none()
    if job is None:
        raise NotFound("no such import job")
    return job


def cancel_job(
    session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, actor: audit.Actor
) -> ImportJob:
    """Stop a job for good; a worker running it stops before its next batch commits."""
    job = _locked(session, tenant_id, job_id)
    if job.status in JobStatus.ENDED:
        raise Conflict(f"the job is already {job.status}")
    end_job(session, job, JobStatus.CANCELLED, actor=actor)
    return job


def pause_job(
    session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, actor: audit.Actor
) -> ImportJob:
    """Stop a job after its current batch, keeping its upload and position."""
    job = _locked(session, tenant_id, job_id)
    if job.status not in JobStatus.ACTIVE:
        raise Conflict(f"only a queued or running job can be paused; this one is {job.status}")
    job.status = JobStatus.PAUSED
    job.lease_owner, job.lease_expires_at, job.updated_at = "", None, utcnow()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="import.paused",
        object_type="import_job",
        object_id=job.id,
    )
    return job


def resume_job(
    session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, actor: audit.Actor
) -> ImportJob:
    """Queue a paused job again: it goes on from its last committed position."""
    job = _locked(session, tenant_id, job_id)
    if job.status != JobStatus.PAUSED:
        raise Conflict(f"only a paused job can be resumed; this one is {job.status}")
    job.status = JobStatus.QUEUED
    job.updated_at = utcnow()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="import.resumed",
        object_type="import_job",
        object_id=job.id,
    )
    return job


def take_lease(job: ImportJob, owner: str, now: datetime) -> None:
    job.status = JobStatus.RUNNING
    job.lease_owner = owner
    job.lease_expires_at = now + LEASE
    job.started_at = job.started_at or now
    job.updated_at = now


def claim_job(session: Session, owner: str, *, now: datetime | None = None) -> ImportJob | None:
    """The oldest uploaded job that is queued, or running under an expired lease (its
    worker died), now leased to ``owner``. ``SKIP LOCKED`` on PostgreSQL lets any
    number of workers claim at once; SQLite's write lock serializes them."""
    now = now or utcnow()
    query = (
        select(ImportJob)
        .where(
            ImportJob.source == "upload",
            ImportJob.status.in_(JobStatus.ACTIVE),
            or_(ImportJob.lease_expires_at.is_(None), ImportJob.lease_expires_at < now),
        )
        .order_by(ImportJob.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.execute(query).scalar_one_or_none()
    if job is not None:
        take_lease(job, owner, now)
    return job


def claim_local_job(
    session: Session,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    owner: str,
    *,
    is_dead: Callable[[str], bool] = lambda _owner: False,
) -> ImportJob:
    """Take a command-line job back to resume it, unless another live process holds it
    (``is_dead`` tells whether a lease owner is known to be gone)."""
    now = utcnow()
    job = _locked(session, tenant_id, job_id)
    if job.source != "local":
        raise Conflict("this job's file was uploaded: a worker runs it")
    if job.status in JobStatus.ENDED:
        raise Conflict(f"the job is already {job.status}")
    held = job.lease_expires_at is not None and job.lease_expires_at > now
    if held and job.lease_owner not in ("", owner) and not is_dead(job.lease_owner):
        raise Conflict("another process is running this job; try again in two minutes")
    take_lease(job, owner, now)
    return job


def purge_abandoned_uploads(session: Session, *, now: datetime | None = None) -> int:
    """Drop uploads that never finished (their server died mid-request)."""
    cutoff = (now or utcnow()) - ABANDONED_UPLOAD
    jobs = list(
        session.scalars(
            select(ImportJob).where(
                ImportJob.status == JobStatus.UPLOADING, ImportJob.created_at < cutoff
            )
        )
    )
    for job in jobs:
        session.delete(job)
    return len(jobs)
