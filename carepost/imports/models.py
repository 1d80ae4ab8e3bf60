"""Import jobs, their uploaded file (encrypted chunks) and their per-row errors.

The uploaded file holds PHI, so it never touches a disk in clear nor sits in a
column in clear: it is stored as ~1 MiB chunks sealed with the tenant's data key
(AES-256-GCM, like every PHI column, and rotated with them), which any worker on
any machine can read back as a stream. The chunks are deleted when the job ends;
the job's counts and its errors (line, column, reason: never a value) stay.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedType
from carepost.tenancy.models import TenantOwned

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class EncryptedBytes(EncryptedType):
    """Raw bytes (a piece of an uploaded file) stored as AES-256-GCM ciphertext."""

    cache_ok = True

    def _dump(self, value: Any) -> bytes:
        return bytes(value)

    def _load(self, raw: bytes) -> bytes:
        return raw


class JobStatus:
    """The life of an import job.

    uploading -> queued -> running -> completed | failed | cancelled; a running or
    queued job may be paused (and resumed: back to queued)."""

    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ACTIVE = (QUEUED, RUNNING)
    ENDED = (COMPLETED, FAILED, CANCELLED)


class ImportJob(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "import_jobs"
    __table_args__ = (Index("ix_import_jobs_status", "status", "lease_expires_at"),)

    format: Mapped[str] = mapped_column(String(20))
    # "upload": the file is in import_chunks (any worker runs it); "local": a file
    # the command line reads itself (only the command line runs it).
    source: Mapped[str] = mapped_column(String(10), default="upload")
    # Column names and field keys only (no values): {"columns": {...}, "date_format": ...}
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    match: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12), default=JobStatus.UPLOADING)
    # The source's cursor just past the last committed record (a byte offset for CSV).
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    # The physical lines of the file up to ``position`` (line-based formats; 0 when
    # unknown), so that a resumed import seeks to the position instead of reading
    # the file's beginning again to number its lines.
    position_line: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    errored: Mapped[int] = mapped_column(BigInteger, default=0)
    # Why the whole job failed (a file-level problem), never a value from the file.
    failure: Mapped[str] = mapped_column(Text, default="")
    created_by_type: Mapped[str] = mapped_column(String(20), default="")
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    @property
    def progress_percent(self) -> float:
        if self.status == JobStatus.COMPLETED:
            return 100.0
        if not self.file_size:
            return 0.0
        return round(min(100.0, 100.0 * self.position / self.file_size), 1)


class ImportChunk(IdMixin, TenantOwned, Base):
    """One piece of an uploaded file, in order (``seq`` from 0), sealed."""

    __tablename__ = "import_chunks"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(EncryptedBytes("import_chunks.data"))


class ImportRowError(Base):
    """One record (or one of its columns) that could not be imported. No value, ever."""

    __tablename__ = "import_errors"
    __table_args__ = (Index("ix_import_errors_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(BigInteger)
    column: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(String(500))
