"""A small real stand-in for the outbox, for the feedback tests (bounces, complaints,
tracking) until the outbox helper's ``messages`` table is merged.

It is a real ledger over real tables in the test database: ``test_messages`` (id,
tenant, recipient, contact, sent time) and ``test_message_events`` (what
``record_message_event`` would write). Like the contract's ``record_message_event``
it also calls :func:`carepost.webhooks.service.emit`, so a bounce reaches the
tenant's webhooks in the same transaction. Install it with
``use_message_ledger(ledger)`` (the ``feedback_ledger`` fixture does).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    insert,
    select,
)
from sqlalchemy.orm import Session

from carepost.core.database import new_id, utcnow
from carepost.crypto.keyring import TenantKeys
from carepost.delivery.message_ledger import MessageRef
from carepost.webhooks import service as webhooks

metadata = MetaData()
test_messages = Table(
    "test_messages",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", Uuid, nullable=False),
    # The real outbox encrypts the address; this stand-in seals it with the tenant key too.
    Column("to_address", String(2000), nullable=True),
    Column("contact_id", Uuid, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)
test_message_events = Table(
    "test_message_events",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", Uuid, nullable=False),
    Column("message_id", Uuid, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("detail", JSON, nullable=False),
)
_LABEL = "test_messages.to_address"


class TestLedger:
    __test__ = False  # not a pytest test class

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def create_tables(self) -> None:
        metadata.create_all(self.engine)

    def drop_tables(self) -> None:
        # Dropped after each module: tests/core/test_migrations.py compares the database
        # with carepost's models, and these tables are not carepost's.
        metadata.drop_all(self.engine)

    def add_message(
        self,
        session: Session,
        keys: TenantKeys,
        *,
        to_address: str | None,
        sent_at: datetime | None = None,
        contact_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        message_id = new_id()
        sealed = keys.encrypt(_LABEL, to_address.encode()).hex() if to_address else None
        session.execute(
            insert(test_messages).values(
                id=message_id,
                tenant_id=keys.tenant_id,
                to_address=sealed,
                contact_id=contact_id,
                sent_at=sent_at or utcnow(),
            )
        )
        return message_id

    def tenant_of(self, session: Session, message_id: uuid.UUID) -> uuid.UUID | None:
        found: uuid.UUID | None = session.scalar(
            select(test_messages.c.tenant_id).where(test_messages.c.id == message_id)
        )
        return found

    def find(self, session: Session, keys: TenantKeys, message_id: uuid.UUID) -> MessageRef | None:
        row = session.execute(
            select(test_messages).where(
                test_messages.c.id == message_id, test_messages.c.tenant_id == keys.tenant_id
            )
        ).one_or_none()
        if row is None:
            return None
        address = (
            keys.decrypt(_LABEL, bytes.fromhex(row.to_address)).decode() if row.to_address else None
        )
        sent_at = row.sent_at
        if sent_at is not None and sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
        return MessageRef(row.id, row.tenant_id, address, row.contact_id, sent_at)

    def record_event(
        self,
        session: Session,
        keys: TenantKeys,
        message_id: uuid.UUID,
        kind: str,
        *,
        occurred_at: datetime | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        when = occurred_at or utcnow()
        session.execute(
            insert(test_message_events).values(
                id=new_id(),
                tenant_id=keys.tenant_id,
                message_id=message_id,
                kind=kind,
                occurred_at=when,
                detail=dict(detail or {}),
            )
        )
        webhooks.emit(
            session,
            keys.tenant_id,
            f"message.{kind}",
            {"message_id": str(message_id), "occurred_at": when.isoformat(), **dict(detail or {})},
        )

    def events(self, session: Session, message_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        rows = session.execute(
            select(test_message_events.c.kind, test_message_events.c.detail)
            .where(test_message_events.c.message_id == message_id)
            .order_by(test_message_events.c.id)
        ).all()
        return [(row.kind, row.detail) for row in rows]


def ledger_fixture(runtime: Any) -> Any:
    """Body of the module-scoped ``feedback_ledger`` fixtures."""
    from carepost.delivery.message_ledger import use_message_ledger

    ledger = TestLedger(runtime.database.engine)
    ledger.create_tables()
    try:
        with use_message_ledger(ledger):
            yield ledger
    finally:
        ledger.drop_tables()
