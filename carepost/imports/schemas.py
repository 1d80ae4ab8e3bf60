"""What the import routes return: jobs with their progress and counts, and row errors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from carepost.imports.models import ImportJob, ImportRowError


class ImportJobOut(BaseModel):
    id: uuid.UUID
    format: str
    match: str
    mapping: dict[str, Any]
    status: str
    progress_percent: float
    file_size: int
    rows_read: int
    created: int
    updated: int
    unchanged: int
    errored: int
    failure: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    errors_url: str

    @classmethod
    def of(cls, job: ImportJob) -> ImportJobOut:
        return cls(
            id=job.id,
            format=job.format,
            match=job.match,
            mapping=job.mapping,
            status=job.status,
            progress_percent=job.progress_percent,
            file_size=job.file_size,
            rows_read=job.rows_read,
            created=job.created,
            updated=job.updated,
            unchanged=job.unchanged,
            errored=job.errored,
            failure=job.failure,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            errors_url=f"/api/v1/imports/{job.id}/errors.csv",
        )


class ImportErrorOut(BaseModel):
    line: int
    column: str
    reason: str

    @classmethod
    def of(cls, row: ImportRowError) -> ImportErrorOut:
        return cls(line=row.line, column=row.column, reason=row.reason)


class ImportErrorPage(BaseModel):
    items: list[ImportErrorOut]
    next_cursor: str | None = None
