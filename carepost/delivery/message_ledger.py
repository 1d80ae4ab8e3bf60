"""The outbox as the feedback side sees it: find a message, record an event on it.

Bounces, complaints, opens and clicks arrive knowing only a message id (from a
signed token). Everything they need of the outbox -- which tenant the message
belongs to, its recipient (to suppress), when it was sent (to spot scanners), and
``record_message_event`` -- goes through :class:`MessageLedger`, and the one place
that binds it to the outbox is :func:`message_ledger`.

:class:`OutboxLedger` reads ``carepost.messages.models.Message`` and records with
``carepost.messages.events.record_message_event``. Tests install their own ledger
with :func:`use_message_ledger`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.crypto.keyring import TenantKeys
from carepost.messages.events import record_message_event
from carepost.messages.models import Message


@dataclass(frozen=True)
class MessageRef:
    """What feedback needs of one message. ``to_address`` is PHI: memory only."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    to_address: str | None
    contact_id: uuid.UUID | None
    sent_at: datetime | None


class MessageLedger(Protocol):
    def tenant_of(self, session: Session, message_id: uuid.UUID) -> uuid.UUID | None:
        """The tenant of a message (no keys needed), or None when it does not exist."""
        ...

    def find(self, session: Session, keys: TenantKeys, message_id: uuid.UUID) -> MessageRef | None:
        """The message, read with its tenant's keys bound."""
        ...

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
        """``record_message_event`` of the outbox (message row, timeline, webhooks)."""
        ...


class OutboxLedger:
    """The ledger over the outbox's ``messages`` table (see the module docstring)."""

    def tenant_of(self, session: Session, message_id: uuid.UUID) -> uuid.UUID | None:
        found: uuid.UUID | None = session.scalar(
            select(Message.tenant_id).where(Message.id == message_id)
        )
        return found

    def find(self, session: Session, keys: TenantKeys, message_id: uuid.UUID) -> MessageRef | None:
        row = session.scalar(
            select(Message).where(Message.tenant_id == keys.tenant_id, Message.id == message_id)
        )
        if row is None:
            return None
        return MessageRef(
            id=row.id,
            tenant_id=row.tenant_id,
            to_address=row.to_address,
            contact_id=row.contact_id,
            sent_at=row.sent_at,
        )

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
        record_message_event(
            session, keys, message_id, kind, occurred_at=occurred_at, detail=dict(detail or {})
        )


_installed: list[MessageLedger] = []


def message_ledger() -> MessageLedger:
    """THE wiring point between feedback and the outbox."""
    return _installed[-1] if _installed else OutboxLedger()


@contextmanager
def use_message_ledger(ledger: MessageLedger) -> Iterator[MessageLedger]:
    """Install another ledger while the block runs (tests, tools)."""
    _installed.append(ledger)
    try:
        yield ledger
    finally:
        _installed.remove(ledger)
