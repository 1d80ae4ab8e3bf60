"""Step 1 of the import wizard: stream a multipart upload into an import job's sealed chunks.

The console's upload form is sent by HTMX with the CSRF token in the
``X-CSRF-Token`` header (the ``<body>``'s ``hx-headers``), so authentication never
parses the body as a form; this module reads the body as it arrives, hands each
piece of the ``file`` part to :class:`~carepost.imports.storage.ChunkWriter` and
counts it against ``max_import_bytes``. Nothing is held in memory beyond a chunk,
nothing is spooled to disk, and a refused or broken upload leaves no job behind.
The job is then *held* (``uploading``, never claimed by a worker) until the
mapping step queues it. The form's ``format`` field (before the file part) says
whether the file is CSV or FHIR; a check given by the caller can refuse the stored
file before the job is kept (a FHIR file that is not FHIR).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from carepost.core.errors import ValidationFailed
from carepost.imports import service
from carepost.imports.multipart import multipart_boundary, read_multipart
from carepost.imports.storage import CHUNK_BYTES, ChunkWriter
from carepost.web.console import Console

# The default match key of a held upload; the mapping step sets the real one.
PROVISIONAL_MATCH = "email"


def size_text(size: int) -> str:
    """A byte count as people read it (the limit in the upload form and its error)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size = size / 1024  # type: ignore[assignment]
    return f"{size} bytes"  # pragma: no cover


def too_large(limit: int) -> str:
    return (
        f"the file is larger than {size_text(limit)}, this server's limit for an import: "
        "split it, or ask your administrator to raise CAREPOST_MAX_IMPORT_BYTES"
    )


class WizardUpload:
    """One upload in progress: a held job created at the first byte of the file."""

    def __init__(self, console: Console, file_format: str) -> None:
        self.console = console
        self.format = file_format
        self.limit = console.runtime.settings.max_import_bytes
        self.job_id: uuid.UUID | None = None
        self.writer: ChunkWriter | None = None
        self.size = 0
        self._pending = bytearray()

    def _create(self) -> None:
        principal = self.console.principal
        with self.console.session() as session:
            job = service.create_job(
                session,
                principal.tenant_id,
                format=self.format,
                mapping={},
                match=PROVISIONAL_MATCH,
                actor=principal.actor,
            )
            self.job_id = job.id
        self.writer = ChunkWriter(self.console.runtime, principal.keys, job.id)

    async def write(self, data: bytes) -> None:
        if self.job_id is None:
            await run_in_threadpool(self._create)
        self.size += len(data)
        if self.size > self.limit:
            raise ValidationFailed(too_large(self.limit), field="file")
        self._pending += data
        if len(self._pending) >= CHUNK_BYTES:
            pending, self._pending = bytes(self._pending), bytearray()
            assert self.writer is not None
            await run_in_threadpool(self.writer.write, pending)

    def _finish(self) -> uuid.UUID:
        if self.job_id is None or self.writer is None:
            raise ValidationFailed("choose a file to import", field="file")
        self.writer.write(bytes(self._pending))
        self.writer.close()
        if self.writer.size == 0:
            raise ValidationFailed("the file is empty", field="file")
        with self.console.session() as session:
            job = service.get_job(session, self.console.principal.tenant_id, self.job_id)
            service.hold_upload(session, job, file_size=self.writer.size)
        return self.job_id

    async def finish(self) -> uuid.UUID:
        return await run_in_threadpool(self._finish)

    def _discard(self) -> None:
        if self.job_id is not None:
            with self.console.runtime.database.session() as session:
                service.discard_upload(session, self.job_id)

    async def discard(self) -> None:
        await run_in_threadpool(self._discard)


WIZARD_FORMATS = ("csv", "fhir")


def wizard_format(fields: dict[str, str]) -> str:
    """The source chosen in the form (its ``format`` field comes before the file)."""
    chosen = fields.get("format") or "csv"
    if chosen not in WIZARD_FORMATS:
        raise ValidationFailed("choose the kind of file: CSV or FHIR", field="format")
    return chosen


async def receive_upload(
    request: Request,
    console: Console,
    fields: dict[str, str] | None = None,
    check: Callable[[Console, uuid.UUID, str], None] | None = None,
) -> uuid.UUID:
    """Stream the posted form's ``file`` part into a held job; returns its id.

    ``fields`` receives the form's other fields (``format``: ``csv`` or ``fhir``, read
    before the file's first byte). ``check(console, job_id, format)`` runs on the stored
    file before the job is kept; a ValidationFailed there drops the job and its chunks."""
    boundary = multipart_boundary(request.headers.get("content-type", ""))
    if boundary is None:
        raise ValidationFailed("send the file with the upload form", field="file")
    fields = {} if fields is None else fields
    upload = WizardUpload(console, "csv")

    async def on_file(data: bytes) -> None:
        if data:  # a form sent without a file has an empty file part
            if upload.job_id is None:
                upload.format = wizard_format(fields)
            await upload.write(data)

    try:
        # The CSRF token is not needed: it travels in a header.
        await read_multipart(
            request.stream(),
            boundary,
            on_file=on_file,
            fields=fields,
            malformed=("the upload is malformed", "file"),
        )
        job_id = await upload.finish()
        if check is not None:
            await run_in_threadpool(check, console, job_id, upload.format)
        return job_id
    except BaseException:  # a refused file, a disconnect: nothing of it stays
        await upload.discard()
        raise
