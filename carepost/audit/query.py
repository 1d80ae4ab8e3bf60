"""Reading the audit trail: filtered, paginated listings and streamed exports.

Every call is scoped to one tenant's chain, which the caller takes from the
authenticated principal, never from the request. Listings run newest first with an
opaque cursor over ``seq`` (the chain's own order), so pages never skip or repeat
an event while others append. Exports stream oldest first in batches: CSV for
spreadsheets, with cells that could run as formulas neutralised (OWASP "CSV
injection"), and JSON Lines carrying ``seq``, ``prev_hash`` and ``hash`` so that
:func:`verify_export_lines` can re-verify them offline.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.orm import Session

from carepost.audit.models import AuditEvent
from carepost.audit.schemas import AuditFilters, ExportFormat
from carepost.audit.service import HASHED_FIELDS, chain_for, event_content
from carepost.audit.verify import reading_connection, verify_export_lines
from carepost.core.errors import NotFound, ValidationFailed

__all__ = [
    "CSV_COLUMNS",
    "EventPage",
    "decode_cursor",
    "encode_cursor",
    "export_events",
    "get_event",
    "list_events",
    "neutralise_cell",
    "verify_export_lines",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EXPORT_BATCH_SIZE = 1000
# The hashed fields a reader needs (the chain and tenant are the export's own), then
# the hash itself.
CSV_COLUMNS = (
    *(name for name in HASHED_FIELDS if name not in ("chain", "tenant_id")),
    "hash",
)
# A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(seq.to_bytes(8, "big")).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    seq = int.from_bytes(raw, "big")
    # A sequence number is a positive signed 64-bit integer (BIGINT, SQLite INTEGER).
    if len(raw) != 8 or not 1 <= seq < 2**63:
        raise ValidationFailed("the cursor is not valid", field="#/query/cursor")
    return seq


def _conditions(tenant_id: uuid.UUID, filters: AuditFilters | None) -> list[ColumnElement[bool]]:
    # Both columns: the chain drives the (chain, seq) index, tenant_id is the guard.
    conditions = [AuditEvent.chain == chain_for(tenant_id), AuditEvent.tenant_id == tenant_id]
    if filters is None:
        return conditions
    for name in ("actor_id", "actor_type", "object_type", "object_id", "outcome"):
        value = getattr(filters, name)
        if value is not None:
            conditions.append(getattr(AuditEvent, name) == value)
    if filters.action is not None:
        prefix = filters.action_prefix
        if prefix is None:
            conditions.append(AuditEvent.action == filters.action)
        elif prefix:
            conditions.append(AuditEvent.action.startswith(prefix, autoescape=True))
    if filters.since is not None:
        conditions.append(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        conditions.append(AuditEvent.occurred_at < filters.until)
    return conditions


def list_events(
    session: Session,
    tenant_id: uuid.UUID,
    filters: AuditFilters | None = None,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> EventPage:
    """One page of a tenant's events matching ``filters``, newest first."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"between 1 and {MAX_PAGE_SIZE}", field="#/query/limit")
    statement = select(AuditEvent).where(*_conditions(tenant_id, filters))
    before = decode_cursor(cursor)
    if before is not None:
        statement = statement.where(AuditEvent.seq < before)
    rows = list(session.scalars(statement.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    events = rows[:limit]
    next_cursor = encode_cursor(events[-1].seq) if len(rows) > limit else None
    return EventPage(events, next_cursor)


def neutralise_cell(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula: prefix it with a quote."""
    return f"'{value}" if value.startswith(FORMULA_TRIGGERS) else value


def _stream(
    session: Session, tenant_id: uuid.UUID, filters: AuditFilters | None
) -> Iterator[Sequence[Row[Any]]]:
    # Core rows, not ORM objects: the export shows what is stored, never a session's
    # cached copy, and needs no identity map.
    statement = (
        select(*AuditEvent.__table__.columns)
        .where(*_conditions(tenant_id, filters))
        .order_by(AuditEvent.seq)
    )
    with reading_connection(session) as connection:
        result = connection.execute(statement, execution_options={"yield_per": EXPORT_BATCH_SIZE})
        yield from result.partitions()


def _csv_row(event: Row[Any]) -> list[str]:
    values: dict[str, Any] = {**event_content(event), "hash": event.hash}
    values["details"] = json.dumps(values["details"], sort_keys=True, ensure_ascii=False)
    return [neutralise_cell(str(values[column])) for column in CSV_COLUMNS]


def _csv_chunks(batches: Iterator[Sequence[Row[Any]]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for batch in batches:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows(_csv_row(event) for event in batch)
        yield buffer.getvalue()


def _jsonl_line(event: Row[Any]) -> str:
    """One JSON Lines record: the hashed content in a stable order, then the hash."""
    record = {**event_content(event), "hash": event.hash}
    # ASCII only: the line survives any tool an auditor opens it with.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _jsonl_chunks(batches: Iterator[Sequence[Row[Any]]]) -> Iterator[str]:
    for batch in batches:
        yield "".join(f"{_jsonl_line(event)}\n" for event in batch)


def export_events(
    session: Session,
    tenant_id: uuid.UUID,
    filters: AuditFilters | None,
    fmt: ExportFormat,
) -> Iterator[str]:
    """Stream a tenant's events matching ``filters``, oldest first, as text chunks.

    Record who exported what (``audit.export``) before streaming: the export is
    itself an access to the trail.
    """
    if fmt == "csv":
        return _csv_chunks(_stream(session, tenant_id, filters))
    if fmt == "jsonl":
        return _jsonl_chunks(_stream(session, tenant_id, filters))
    raise ValidationFailed("the export format is csv or jsonl", field="fmt")


def get_event(session: Session, tenant_id: uuid.UUID, event_id: uuid.UUID) -> AuditEvent:
    """One event of a tenant's chain; another tenant's event is simply not found."""
    event = session.scalar(
        select(AuditEvent).where(*_conditions(tenant_id, None), AuditEvent.id == event_id)
    )
    if event is None:
        raise NotFound("no such audit event")
    return event
