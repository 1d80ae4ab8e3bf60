"""REST routes for contact imports (``/imports``): upload, progress, errors, cancel.

Uploading needs ``contacts:write``, reading jobs and errors ``contacts:read``
(a job and its errors hold no value of the file: line numbers, column names,
reasons). The upload is streamed straight into sealed chunks in the database,
never parsed into memory nor spooled to a temporary file: send it either

* as the raw body (``Content-Type: text/csv``), with ``match``, ``format`` and
  ``mapping`` (JSON) as query parameters, or
* as ``multipart/form-data`` with the fields ``match``, ``format`` and
  ``mapping`` *before* the ``file`` part.

Cookie-authenticated (console) uploads send their CSRF token in the
``X-CSRF-Token`` header. The answer is ``202``: the job is queued for
``carepost worker``; poll ``GET /imports/{id}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import StreamingResponse
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.core.errors import ValidationFailed
from carepost.core.runtime import Runtime
from carepost.imports import service
from carepost.imports.multipart import MAX_FIELD_BYTES, read_multipart
from carepost.imports.report import error_report_lines
from carepost.imports.runner import check_file_start
from carepost.imports.schemas import ImportErrorOut, ImportErrorPage, ImportJobOut
from carepost.imports.storage import CHUNK_BYTES, ChunkWriter

router = APIRouter(prefix="/imports", tags=["imports"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("contacts:read"))]
Writer = Annotated[Principal, Depends(require("contacts:write"))]
Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _mapping(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValidationFailed("must be a JSON object", field="mapping") from None
    if not isinstance(value, dict):
        raise ValidationFailed("must be a JSON object", field="mapping")
    return value


class _Upload:
    """One upload in progress: the job, once its options are known, and its chunks."""

    def __init__(self, runtime: Runtime, principal: Principal, options: dict[str, str]) -> None:
        self.runtime = runtime
        self.principal = principal
        self.options = options
        self.job_id: uuid.UUID | None = None
        self.writer: ChunkWriter | None = None
        self._pending = bytearray()

    def _create(self) -> None:
        with self.runtime.bound_session(self.principal.keys) as session:
            job = service.create_job(
                session,
                self.principal.tenant_id,
                format=self.options.get("format") or "csv",
                mapping=_mapping(self.options.get("mapping")),
                match=self.options.get("match") or "",
                actor=self.principal.actor,
            )
            self.job_id = job.id
        self.writer = ChunkWriter(self.runtime, self.principal.keys, job.id)

    async def start(self) -> None:
        await run_in_threadpool(self._create)

    async def write(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= CHUNK_BYTES:
            pending, self._pending = bytes(self._pending), bytearray()
            assert self.writer is not None
            await run_in_threadpool(self.writer.write, pending)

    def _finish(self) -> uuid.UUID:
        assert self.writer is not None and self.job_id is not None
        self.writer.write(bytes(self._pending))
        self.writer.close()
        if self.writer.size == 0:
            raise ValidationFailed("the file is empty", field="file")
        with self.runtime.bound_session(self.principal.keys) as session:
            job = service.get_job(session, self.principal.tenant_id, self.job_id)
            check_file_start(session, job, self.writer.first_chunk)
            service.queue_upload(
                session, job, file_size=self.writer.size, actor=self.principal.actor
            )
        return self.job_id

    async def finish(self) -> uuid.UUID:
        return await run_in_threadpool(self._finish)

    def _discard(self) -> None:
        if self.job_id is not None:
            with self.runtime.database.session() as session:
                service.discard_upload(session, self.job_id)

    async def discard(self) -> None:
        await run_in_threadpool(self._discard)


async def _receive_multipart(request: Request, upload: _Upload, boundary: bytes) -> None:
    """Field parts go to the options, the ``file`` part to the chunks (the job is
    created at its first byte, so the options must come before it)."""

    async def on_file(data: bytes) -> None:
        if upload.job_id is None:
            await upload.start()
        await upload.write(data)

    await read_multipart(request.stream(), boundary, on_file=on_file, fields=upload.options)
    if upload.job_id is None:
        raise ValidationFailed(
            "send the file as the form's 'file' part, after match and mapping", field="file"
        )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a CSV file to import contacts from (raw body or multipart)",
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "match": {"type": "string"},
                            "format": {"type": "string"},
                            "mapping": {"type": "string"},
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                },
            }
        }
    },
)
async def create_import(
    request: Request,
    runtime: RuntimeDep,
    principal: Writer,
    match: Annotated[str | None, Query(max_length=20)] = None,
    format: Annotated[str | None, Query(max_length=20)] = None,
    mapping: Annotated[str | None, Query(max_length=MAX_FIELD_BYTES)] = None,
) -> ImportJobOut:
    options = {"match": match or "", "format": format or "", "mapping": mapping or ""}
    upload = _Upload(runtime, principal, options)
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    try:
        if content_type == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise ValidationFailed("the multipart body has no boundary", field="body")
            await _receive_multipart(request, upload, boundary)
        else:
            await upload.start()
            async for piece in request.stream():
                await upload.write(piece)
        job_id = await upload.finish()
    except Exception:  # a disconnect, a refused file: nothing of it stays
        await upload.discard()
        raise

    def answer() -> ImportJobOut:
        with runtime.bound_session(principal.keys) as session:
            return ImportJobOut.of(service.get_job(session, principal.tenant_id, job_id))

    return await run_in_threadpool(answer)


@router.get("", summary="List import jobs, newest first")
def list_imports(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[ImportJobOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_jobs(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page[ImportJobOut](
            items=[ImportJobOut.of(row) for row in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )


@router.get("/{job_id}", summary="An import job: status, progress and counts")
def get_import(job_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> ImportJobOut:
    with runtime.bound_session(principal.keys) as session:
        return ImportJobOut.of(service.get_job(session, principal.tenant_id, job_id))


def _error_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    # ASCII digits only ("²".isdigit() is true), and within a signed 64-bit integer.
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) >= 2**63:
        raise ValidationFailed("the cursor is not valid", field="#/query/cursor")
    return int(cursor)


@router.get("/{job_id}/errors", summary="The rows not imported: line, column, reason")
def list_import_errors(
    job_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ImportErrorPage:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_errors(
            session, principal.tenant_id, job_id, after=_error_cursor(cursor), limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return ImportErrorPage(
        items=[ImportErrorOut.of(row) for row in rows],
        next_cursor=str(rows[-1].id) if more else None,
    )


@router.get(
    "/{job_id}/errors.csv",
    summary="The error report as CSV (cells that a spreadsheet would run are neutralized)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def download_import_errors(
    job_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> StreamingResponse:
    with runtime.bound_session(principal.keys) as session:
        service.get_job(session, principal.tenant_id, job_id)

    def pages() -> Iterator[str]:
        after = 0
        yield from error_report_lines(())
        while True:
            with runtime.bound_session(principal.keys) as session:
                rows = service.list_errors(
                    session, principal.tenant_id, job_id, after=after, limit=5000
                )
            lines = error_report_lines(rows)
            next(lines)  # the header, sent once above
            yield from lines
            if len(rows) < 5000:
                return
            after = rows[-1].id

    return StreamingResponse(
        pages(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="import-{job_id}-errors.csv"'},
    )


@router.post("/{job_id}/cancel", summary="Cancel an import (rows already imported stay)")
def cancel_import(job_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> ImportJobOut:
    with runtime.bound_session(principal.keys) as session:
        job = service.cancel_job(session, principal.tenant_id, job_id, actor=principal.actor)
        return ImportJobOut.of(job)
