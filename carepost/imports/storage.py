"""The uploaded file of an import job, kept in the database as sealed chunks.

Writing: :class:`ChunkWriter` takes the request body piece by piece and stores
each full :data:`CHUNK_BYTES` chunk in a short transaction of its own, so a 2 GB
upload never sits in memory and never holds SQLite's write lock for long.

Reading: :func:`open_upload` gives a buffered binary stream over the chunks that
fetches one chunk at a time (a read snapshot of its own on SQLite, so it never
waits for the runner's write transaction), starting at any byte offset; it can
seek (a resumed import jumps to its position), fetching only the chunk it lands in.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from carepost.core.database import READ_SNAPSHOT
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.imports.models import ImportChunk

CHUNK_BYTES = 1024 * 1024


class ChunkWriter:
    """Buffers a body and stores it as sealed chunks of :data:`CHUNK_BYTES`."""

    def __init__(self, runtime: Runtime, keys: TenantKeys, job_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.keys = keys
        self.job_id = job_id
        self.size = 0
        self.first_chunk = b""  # what the header check reads (the file's start)
        self._buffer = bytearray()
        self._seq = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= CHUNK_BYTES:
            self._store(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def close(self) -> None:
        if self._buffer:
            self._store(bytes(self._buffer))
            self._buffer.clear()

    def _store(self, piece: bytes) -> None:
        if self._seq == 0:
            self.first_chunk = piece
        with self.runtime.bound_session(self.keys) as session:
            session.add(
                ImportChunk(
                    tenant_id=self.keys.tenant_id,
                    job_id=self.job_id,
                    seq=self._seq,
                    size=len(piece),
                    data=piece,
                )
            )
        self._seq += 1


def delete_chunks(session: Session, job_id: uuid.UUID) -> None:
    session.execute(delete(ImportChunk).where(ImportChunk.job_id == job_id))


class _ChunkRaw(io.RawIOBase):
    """Raw reads over the chunks of one job, one chunk fetched at a time."""

    def __init__(self, fetch: Callable[[int], bytes | None], start: int) -> None:
        self._fetch = fetch
        self._seq = 0
        self._current = b""
        self._at = 0
        self._move(start)

    def _move(self, offset: int) -> None:
        # Chunks are all CHUNK_BYTES long but the last, so an offset names its chunk.
        self._seq = offset // CHUNK_BYTES
        self._current, self._at = b"", 0
        if offset % CHUNK_BYTES:
            self._current = self._fetch(self._seq) or b""
            self._seq += 1
            self._at = offset % CHUNK_BYTES

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return (self._seq - (1 if self._current else 0)) * CHUNK_BYTES + self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of an upload")
        if offset < 0:
            raise ValueError("negative seek position")
        self._move(offset)
        return offset

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._at >= len(self._current):
            piece = self._fetch(self._seq)
            if piece is None:
                return 0
            self._seq += 1
            self._current, self._at = piece, 0
        count = min(len(buffer), len(self._current) - self._at)
        buffer[:count] = self._current[self._at : self._at + count]
        self._at += count
        return count


def open_upload(
    runtime: Runtime, keys: TenantKeys, job_id: uuid.UUID, *, start: int = 0
) -> BinaryIO:
    """A binary stream over a job's uploaded file, from byte ``start``."""

    def fetch(seq: int) -> bytes | None:
        with runtime.database.engine.connect() as connection:
            if runtime.database.is_sqlite:
                connection = connection.execution_options(**{READ_SNAPSHOT: True})
            with connection.begin(), bind_tenant_keys(keys):
                piece: bytes | None = connection.execute(
                    select(ImportChunk.data).where(
                        ImportChunk.tenant_id == keys.tenant_id,
                        ImportChunk.job_id == job_id,
                        ImportChunk.seq == seq,
                    )
                ).scalar_one_or_none()
        return piece

    return io.BufferedReader(_ChunkRaw(fetch, start), buffer_size=CHUNK_BYTES)
