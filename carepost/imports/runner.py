"""Running an import job: read records from a source, upsert them in batches, resumably.

Each batch is one transaction that upserts its contacts (through
:func:`carepost.contacts.upserts.upsert_prepared`, the same path as the REST
batch API), writes the errors of its records and moves the job's position and
counts past them. The contacts of the next batch are checked meanwhile, in worker
processes (:mod:`carepost.imports.preparation`). A crash (even ``kill -9``)
therefore loses at most the batch in flight, which is read again from the last
committed position when the job is resumed: no row is skipped, none counted twice,
and the upserts are idempotent.

Before committing, the batch re-reads the job under a row lock and gives up if
the job was cancelled or paused, if another worker took it over (an expired
lease), or if its position moved: two workers never both commit the same rows.

Sources are chosen by the job's ``format`` in :data:`SOURCES`; a source is a
function ``(stream, start, plan) -> OpenedSource`` that reads the file as a
stream from its beginning and yields records after ``start``.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from carepost.audit.service import Actor
from carepost.consent.suppression import Address, add_suppression
from carepost.contacts import custom_fields, stages
from carepost.contacts.models import Contact
from carepost.contacts.prepare import (
    IDENTIFIER_KINDS,
    PreparationContext,
    prepare_contact,
)
from carepost.contacts.sealing import KeyMaterial
from carepost.contacts.upserts import (
    ItemResult,
    load_context,
    upsert_contacts,
    upsert_prepared,
)
from carepost.contacts.values import FieldSpec
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError, Conflict, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.imports import service
from carepost.imports.csv_source import CsvReader, csv_rows
from carepost.imports.fhir import FhirOptions, iter_fhir
from carepost.imports.mapping import plan_rows
from carepost.imports.models import ImportJob, ImportRowError, JobStatus
from carepost.imports.preparation import BatchPreparer, Prepared, batch_sized_gc
from carepost.imports.sources import RowError, SourceRow

BATCH_ROWS = 5000
# Errors kept per job: past this, rows are still counted as errored but not listed.
MAX_STORED_ERRORS = 100_000
CONFLICT_RETRIES = 3

log = get_logger(__name__)


@dataclass(frozen=True)
class ImportPlan:
    """What a source needs besides the file: the job's mapping and the tenant's fields."""

    mapping: Mapping[str, Any]
    match: str
    schema: Mapping[str, FieldSpec]
    stages: Collection[str]
    # The physical lines up to the job's position (0: unknown), so that a resumed
    # line-based source seeks there instead of counting the lines before it.
    resume_line: int = 0


@dataclass
class OpenedSource:
    rows: Iterator[SourceRow]
    # The source's name (CSV column, FHIR path) for an upsert error's pointer.
    column_for: Callable[[str], str] = lambda pointer: pointer


Source = Callable[[BinaryIO, int, ImportPlan], OpenedSource]


def open_csv(stream: BinaryIO, start: int, plan: ImportPlan) -> OpenedSource:
    reader = CsvReader(stream, start=start, start_line=plan.resume_line)
    mapper = plan_rows(reader.header, plan.mapping, plan.schema, match=plan.match)
    return OpenedSource(csv_rows(reader, mapper), mapper.column_for)


def open_fhir(stream: BinaryIO, start: int, plan: ImportPlan) -> OpenedSource:
    options = FhirOptions.from_mapping(plan.mapping, fields=set(plan.schema))
    return OpenedSource(
        iter_fhir(stream, start=start, options=options, start_line=plan.resume_line)
    )


# One line per format.
SOURCES: dict[str, Source] = {
    "csv": open_csv,
    "fhir": open_fhir,
}


def load_plan(session: Session, job: ImportJob) -> ImportPlan:
    return ImportPlan(
        job.mapping,
        job.match,
        custom_fields.load_schema(session, job.tenant_id),
        stages.stage_keys(session, job.tenant_id),
        job.position_line,
    )


def check_file_start(session: Session, job: ImportJob, first_bytes: bytes) -> None:
    """Refuse an upload whose beginning the source cannot read (a CSV header that is
    missing, not UTF-8, or without the mapped columns) before it is queued."""
    SOURCES[job.format](io.BytesIO(first_bytes), 0, load_plan(session, job))


@dataclass
class Progress:
    """Where a job stands after a batch (for the command line's progress bar)."""

    position: int
    file_size: int
    rows_read: int
    errored: int


@dataclass
class RunResult:
    """How a run of a job ended: ``completed``, ``failed``, ``cancelled``, ``paused``,
    ``lost`` (another worker holds it now) or ``yielded`` (out of time or batches)."""

    outcome: str
    rows: int = 0
    batches: int = 0


@dataclass
class _Batch:
    rows: list[SourceRow]
    items: list[dict[str, Any]] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)
    # Indexes of items whose addresses are suppressed once imported (deceased patients).
    suppressed_items: list[int] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # line, column, reason
    errored_rows: int = 0
    # The items being checked and sealed ahead of the write (BatchPreparer), against
    # ``context``.
    prepared: Future[Prepared] | None = None
    context: PreparationContext | None = None
    now: datetime | None = None


def _match_text(item: Mapping[str, Any], match: str) -> str:
    value = (
        (item.get("external_ids") or {}).get(match)
        if match in IDENTIFIER_KINDS
        else item.get(match)
    )
    if not isinstance(value, str):
        return ""
    text = value.strip()
    return text.lower() if match == "email" else text


def _other_errors(
    row: SourceRow, plan: ImportPlan, column_for: Callable[[str], str], now: datetime
) -> list[RowError]:
    """The checks the upsert would make, on the rest of a row that already failed, so
    that its report names every bad column at once."""
    if row.item is None:
        return []
    try:
        prepare_contact(row.item, schema=plan.schema, stages=plan.stages, now=now)
    except ValidationFailed as failed:
        reported = {error.column for error in row.errors}
        found = [RowError(column_for(error.field), error.message) for error in failed.errors]
        return [error for error in found if error.column not in reported]
    return []


def _split(rows: list[SourceRow], plan: ImportPlan, column_for: Callable[[str], str]) -> _Batch:
    """Items to upsert, and the errors found before any write (including a key seen
    twice in the batch: the first row wins, the others are reported)."""
    match = plan.match
    batch = _Batch(rows)
    seen: dict[str, int] = {}
    now = utcnow()
    for row in rows:
        refused = row.item is None or any(not error.left_out for error in row.errors)
        if refused:
            batch.errored_rows += 1
            errors = [*row.errors, *_other_errors(row, plan, column_for, now)]
            errors = errors or [RowError("", "this record cannot be read")]
            batch.errors += [(row.line, error.column, error.reason) for error in errors]
            continue
        assert row.item is not None
        key = _match_text(row.item, match)
        if key and key in seen:
            batch.errored_rows += 1
            batch.errors.append(
                (row.line, "", f"the same {match} as line {seen[key]}: import each contact once")
            )
            continue
        if key:
            seen[key] = row.line
        # Elements the source left out are reported; the rest of the record imports.
        batch.errors += [(row.line, error.column, error.reason) for error in row.errors]
        if row.suppress_addresses:
            batch.suppressed_items.append(len(batch.items))
        batch.items.append(row.item)
        batch.item_lines.append(row.line)
    return batch


def _batches(rows: Iterator[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    batch: list[SourceRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def suppress_addresses(
    session: Session, keys: TenantKeys, contact_id: uuid.UUID, actor: Actor
) -> None:
    """Suppress the email and phone an imported contact now has (the file's, or those
    stored before) for every purpose: a deceased patient. Each new entry is audited
    by the suppression service."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return
    for channel, value in (("email", contact.email), ("sms", contact.phone)):
        if value:
            add_suppression(
                session,
                keys,
                address=Address(channel, value),
                reason="deceased",
                source="import",
                actor=actor,
                scope="all",
            )


def _relaxed_commit(session: Session) -> None:
    """PostgreSQL: commit this batch without waiting for its WAL to reach the disk.

    Safe for an import: a crash of the server may lose the last few committed
    batches (up to three times ``wal_writer_delay``, 600 ms by default), never part
    of one, and the job's position commits in the same transaction as its rows, so
    the job resumes after the last batch that did reach the disk: nothing skipped,
    nothing twice. Every other transaction keeps the server's setting.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))


def job_actor(job: ImportJob) -> Actor:
    return Actor(job.created_by_type or "system", job.created_by_id, f"import job {job.id}")


class JobRunner:
    """Runs one job that ``owner`` holds the lease of, over its file as a stream."""

    def __init__(
        self,
        runtime: Runtime,
        keys: TenantKeys,
        job_id: uuid.UUID,
        *,
        owner: str,
        batch_rows: int = BATCH_ROWS,
        progress: Callable[[Progress], None] | None = None,
        prepare_processes: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.keys = keys
        self.job_id = job_id
        self.owner = owner
        self.batch_rows = batch_rows
        self.progress = progress
        # Worker processes checking the next batch (None: the setting).
        self.prepare_processes = prepare_processes
        self._preparer = BatchPreparer(0, KeyMaterial.of(keys))
        self._context: PreparationContext | None = None

    def _load(self) -> tuple[ImportJob, ImportPlan]:
        with self.runtime.bound_session(self.keys) as session:
            job = service.get_job(session, self.keys.tenant_id, self.job_id)
            self._context = load_context(session, job.tenant_id)
            return job, load_plan(session, job)

    def _checked_ahead(self, opened: OpenedSource, plan: ImportPlan) -> Iterator[_Batch]:
        """The file's batches, each handed out once the next one is being checked."""
        waiting: _Batch | None = None
        for rows in _batches(opened.rows, self.batch_rows):
            batch = _split(rows, plan, opened.column_for)
            if batch.items:
                assert self._context is not None
                batch.context, batch.now = self._context, utcnow()
                batch.prepared = self._preparer.submit(batch.items, batch.context, now=batch.now)
            if waiting is not None:
                yield waiting
            waiting = batch
        if waiting is not None:
            yield waiting

    def run(
        self,
        stream: BinaryIO,
        *,
        max_batches: int | None = None,
        deadline: float | None = None,
    ) -> RunResult:
        """Import from the job's position until the file ends, the job is stopped, or
        ``max_batches``/``deadline`` (``time.monotonic``) is reached.

        ``stream`` is the whole file from its first byte (the source skips to the
        job's position itself); it is closed on return."""
        with batch_sized_gc():
            return self._run(stream, max_batches=max_batches, deadline=deadline)

    def _run(
        self, stream: BinaryIO, *, max_batches: int | None, deadline: float | None
    ) -> RunResult:
        job, plan = self._load()
        actor = job_actor(job)
        result = RunResult("yielded")
        processes = self.prepare_processes
        if processes is None:
            processes = self.runtime.settings.import_prepare_processes
        self._preparer = BatchPreparer(processes, KeyMaterial.of(self.keys))
        try:
            try:
                opened = SOURCES[job.format](stream, job.position, plan)
            except CarepostError as failed:
                return self._fail(failed.detail, actor)
            position = job.position
            for batch in self._checked_ahead(opened, plan):
                outcome = self._commit(batch, position, opened, actor)
                if outcome is not None:
                    result.outcome = outcome
                    return result
                position = batch.rows[-1].position
                result.rows += len(batch.rows)
                result.batches += 1
                if max_batches is not None and result.batches >= max_batches:
                    return result
                if deadline is not None and time.monotonic() >= deadline:
                    self._release()
                    return result
        except Conflict:
            raise  # concurrent writers, retried already: the job is taken up again later
        except CarepostError as failed:
            # A file problem found mid-way (a resumed file that is shorter, say).
            return self._fail(failed.detail, actor)
        finally:
            self._preparer.close()
            stream.close()
        result.outcome = self._complete(position, actor)
        return result

    def _check(self, session: Session, position: int) -> tuple[ImportJob | None, str | None]:
        job = session.execute(
            select(ImportJob).where(ImportJob.id == self.job_id).with_for_update()
        ).scalar_one()
        if job.status in (JobStatus.CANCELLED, JobStatus.PAUSED, JobStatus.FAILED):
            return None, job.status
        if job.lease_owner != self.owner or job.position != position:
            return None, "lost"
        return job, None

    def _commit(
        self, batch: _Batch, position: int, opened: OpenedSource, actor: Actor
    ) -> str | None:
        progress: Progress | None = None
        for attempt in range(CONFLICT_RETRIES):
            try:
                with self.runtime.bound_session(self.keys) as session:
                    _relaxed_commit(session)
                    job, stopped = self._check(session, position)
                    if job is None:
                        return stopped
                    self._write(session, job, batch, opened, actor)
                    progress = Progress(job.position, job.file_size, job.rows_read, job.errored)
                break
            except Conflict:
                # Another writer touched the same contacts: the batch rolled back whole.
                if attempt == CONFLICT_RETRIES - 1:
                    raise
        if self.progress is not None and progress is not None:
            self.progress(progress)
        return None

    def _write(
        self,
        session: Session,
        job: ImportJob,
        batch: _Batch,
        opened: OpenedSource,
        actor: Actor,
    ) -> None:
        now = utcnow()
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        errors = list(batch.errors)
        errored = batch.errored_rows
        if batch.items:
            results = self._upsert(session, job, batch, actor, now)
            for result in results:
                if result.status == "error":
                    errored += 1
                    line = batch.item_lines[result.index]
                    errors += [
                        (line, opened.column_for(error.field), error.message)
                        for error in result.errors
                    ]
                else:
                    counts[result.status] += 1
                    if result.index in batch.suppressed_items and result.id is not None:
                        suppress_addresses(session, self.keys, result.id, actor)
        if errors and job.errored < MAX_STORED_ERRORS:
            errors.sort()
            session.execute(
                insert(ImportRowError),
                [
                    {
                        "tenant_id": job.tenant_id,
                        "job_id": job.id,
                        "line": line,
                        "column": column[:200],
                        "reason": reason[:500],
                    }
                    for line, column, reason in errors
                ],
            )
        job.position = batch.rows[-1].position
        job.position_line = batch.rows[-1].last_line
        job.rows_read += len(batch.rows)
        job.created += counts["created"]
        job.updated += counts["updated"]
        job.unchanged += counts["unchanged"]
        job.errored += errored
        job.updated_at = now
        job.lease_expires_at = now + service.LEASE

    def _upsert(
        self, session: Session, job: ImportJob, batch: _Batch, actor: Actor, now: datetime
    ) -> list[ItemResult]:
        assert batch.prepared is not None and batch.context is not None and batch.now
        context = load_context(session, job.tenant_id)
        if context != batch.context:
            # The fields or stages changed since the batch was checked: check it (and
            # the batches after it) against what they are now.
            self._context = context
            return upsert_contacts(
                session, self.keys, batch.items, match=job.match, actor=actor, now=now
            )
        prepared, sealed = self._preparer.result(
            batch.prepared, batch.items, context, now=batch.now
        )
        return upsert_prepared(
            session, self.keys, prepared, match=job.match, actor=actor, sealed=sealed
        )

    def _release(self) -> None:
        """Out of time: let any worker (this one included) pick the job up again."""
        with self.runtime.bound_session(self.keys) as session:
            job = session.get(ImportJob, self.job_id)
            if job is not None and job.lease_owner == self.owner:
                job.lease_owner, job.lease_expires_at = "", None

    def _complete(self, position: int, actor: Actor) -> str:
        with self.runtime.bound_session(self.keys) as session:
            job, stopped = self._check(session, position)
            if job is None:
                return stopped or "lost"
            service.end_job(session, job, JobStatus.COMPLETED, actor=actor)
        log.info("import.completed", job_id=str(self.job_id))
        return JobStatus.COMPLETED

    def _fail(self, reason: str, actor: Actor) -> RunResult:
        with self.runtime.bound_session(self.keys) as session:
            job = session.get(ImportJob, self.job_id)
            if job is not None and job.status not in JobStatus.ENDED:
                service.end_job(session, job, JobStatus.FAILED, actor=actor, failure=reason)
        log.info("import.failed", job_id=str(self.job_id))
        return RunResult(JobStatus.FAILED)
