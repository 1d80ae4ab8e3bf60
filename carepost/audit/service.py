"""Writing the hash-chained audit trail, and the hash that verification recomputes.

Every event's hash is SHA-256 over a canonical JSON of its content and the hash
of the event before it in the same chain. The chain needs no secret to check, so
an auditor can verify an exported trail on their own machine; to catch a
wholesale rewrite by someone with write access to the database, record the head
hash printed by ``carepost audit verify`` somewhere else (a ticket, a WORM bucket).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from carepost.audit.models import AuditEvent, AuditHead
from carepost.core.bulk import write_rows
from carepost.core.database import new_id, new_ids, utcnow

GENESIS_HASH = "0" * 64
SYSTEM_CHAIN = "system"
_EVENTS_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Actor:
    """Who did something: a console user, an API key, the system, or a recipient."""

    type: str
    id: str = ""
    label: str = ""
    client_address: str = ""


SYSTEM = Actor(type="system", id="", label="carepost")


def chain_for(tenant_id: uuid.UUID | None) -> str:
    return str(tenant_id) if tenant_id is not None else SYSTEM_CHAIN


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The fields an event's hash covers, in the order exports list them.
HASHED_FIELDS = (
    "chain",
    "seq",
    "id",
    "tenant_id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "client_address",
    "reason",
    "details",
    "prev_hash",
)
# The columns record_many writes: the hashed fields and the hash.
_EVENT_COLUMNS = (*HASHED_FIELDS, "hash")


class ChainedEvent(Protocol):
    """What hashing needs of an event: an ORM row, a Core row or a parsed export line."""

    @property
    def chain(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def tenant_id(self) -> uuid.UUID | None: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def actor_type(self) -> str: ...
    @property
    def actor_id(self) -> str: ...
    @property
    def actor_label(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def object_type(self) -> str: ...
    @property
    def object_id(self) -> str: ...
    @property
    def client_address(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...
    @property
    def prev_hash(self) -> str: ...


def event_content(event: ChainedEvent) -> dict[str, Any]:
    """An event's hashed content as JSON-ready values (also the body of a JSONL export line)."""
    return {
        "chain": event.chain,
        "seq": event.seq,
        "id": str(event.id),
        "tenant_id": str(event.tenant_id) if event.tenant_id else None,
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "outcome": event.outcome,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "client_address": event.client_address,
        "reason": event.reason,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }


def content_hash(content: Mapping[str, Any]) -> str:
    """The SHA-256 of canonical JSON of :func:`event_content` (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def event_hash(event: ChainedEvent) -> str:
    """The SHA-256 of an event's canonical content, chained to ``prev_hash``."""
    return content_hash(event_content(event))


def ensure_chain(session: Session, chain: str) -> None:
    """Create a chain's head row if missing, safely under concurrent writers."""
    values = {"chain": chain, "seq": 0, "last_hash": GENESIS_HASH}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(AuditHead).values(**values).on_conflict_do_nothing())


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: str | uuid.UUID = "",
    outcome: str = "success",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain, in the caller's transaction.

    ``details`` must never hold PHI values: name fields, never copy their content.
    The head row is locked by an UPDATE, so concurrent appenders to one chain queue
    up (PostgreSQL row lock, SQLite write lock) and the chain cannot fork.
    """
    chain = chain_for(tenant_id)
    clean_details = json.loads(json.dumps(details or {}, default=str))
    head = session.execute(
        update(AuditHead)
        .where(AuditHead.chain == chain)
        .values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.last_hash)
    ).one_or_none()
    if head is None:
        ensure_chain(session, chain)
        return record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            outcome=outcome,
            reason=reason,
            details=details,
        )
    seq, prev_hash = head
    event = AuditEvent(
        id=new_id(),
        chain=chain,
        seq=seq,
        tenant_id=tenant_id,
        occurred_at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label,
        action=action,
        outcome=outcome,
        object_type=object_type,
        object_id=str(object_id),
        client_address=actor.client_address,
        reason=reason,
        details=clean_details,
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.chain == chain).values(last_hash=event.hash))
    session.flush()
    return event


@dataclass(frozen=True)
class Entry:
    """One event for :func:`record_many`."""

    action: str
    object_type: str = ""
    object_id: str | uuid.UUID = ""
    outcome: str = "success"
    reason: str = ""
    details: dict[str, Any] | None = None


def record_many(
    session: Session, *, tenant_id: uuid.UUID | None, actor: Actor, entries: Sequence[Entry]
) -> None:
    """Append several events to the tenant's chain at once (a delivery batch's
    protection decisions): one update of the chain's head for all, the same chain
    as :func:`record` one by one would make."""
    if not entries:
        return
    chain = chain_for(tenant_id)
    head = session.execute(
        update(AuditHead)
        .where(AuditHead.chain == chain)
        .values(seq=AuditHead.seq + len(entries))
        .returning(AuditHead.seq, AuditHead.last_hash)
    ).one_or_none()
    if head is None:
        ensure_chain(session, chain)
        record_many(session, tenant_id=tenant_id, actor=actor, entries=entries)
        return
    last_seq, prev_hash = head
    seq = last_seq - len(entries)
    now = utcnow()
    occurred_at = _timestamp(now)
    tenant = str(tenant_id) if tenant_id else None
    rows = []
    for entry, event_id in zip(entries, new_ids(len(entries)), strict=True):
        seq += 1
        # The content event_hash reads, built directly, and the rows written by one
        # COPY: a delivery batch has hundreds, which ORM objects or an INSERT's
        # parameters would cost several times more to write.
        details = json.loads(json.dumps(entry.details or {}, default=str))
        content = {
            "chain": chain,
            "seq": seq,
            "id": str(event_id),
            "tenant_id": tenant,
            "occurred_at": occurred_at,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "actor_label": actor.label,
            "action": entry.action,
            "outcome": entry.outcome,
            "object_type": entry.object_type,
            "object_id": str(entry.object_id),
            "client_address": actor.client_address,
            "reason": entry.reason,
            "details": details,
            "prev_hash": prev_hash,
        }
        stored = content | {
            "id": event_id,
            "tenant_id": tenant_id,
            "occurred_at": now,
            "hash": content_hash(content),
        }
        rows.append(tuple(stored[column] for column in _EVENT_COLUMNS))
        prev_hash = stored["hash"]
    write_rows(session, _EVENTS_TABLE, _EVENT_COLUMNS, rows)
    session.execute(update(AuditHead).where(AuditHead.chain == chain).values(last_hash=prev_hash))
