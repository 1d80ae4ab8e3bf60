"""Helpers of the protection tests: queue a message, read what delivery decided."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.core.runtime import Runtime
from carepost.messages.models import Message, MessageEvent
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages

LIMITS = SendLimits(max_attachment_bytes=1024 * 1024, base_url="https://testserver")


def send(runtime: Runtime, tenant: Any, **fields: Any) -> uuid.UUID:
    """Queue one message (``to``, ``subject``, ``text``...); returns its id."""
    request = MessageIn.model_validate(
        {"from": "care@clinic.example", "subject": "A note", "text": "Hello"} | fields
    )
    with runtime.bound_session(tenant[1]) as session:
        [result] = send_messages(session, tenant[1], [(request, None)], SendContext(SYSTEM, LIMITS))
    assert result.state == "queued", result
    return result.id


def message(runtime: Runtime, tenant: Any, message_id: uuid.UUID) -> Message:
    with runtime.bound_session(tenant[1]) as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


def events(runtime: Runtime, message_id: uuid.UUID) -> list[str]:
    with runtime.database.session() as session:
        return list(
            session.scalars(
                select(MessageEvent.kind)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.id)
            )
        )


def decisions(runtime: Runtime, message_id: uuid.UUID) -> list[dict[str, Any]]:
    """The ``message.protection`` audit entries of a message, oldest first."""
    with runtime.database.session() as session:
        return [
            dict(details)
            for details in session.scalars(
                select(AuditEvent.details)
                .where(
                    AuditEvent.action == "message.protection",
                    AuditEvent.object_id == str(message_id),
                )
                .order_by(AuditEvent.seq)
            )
        ]


def portal_notices(runtime: Runtime, tenant: Any) -> list[Message]:
    with runtime.bound_session(tenant[1]) as session:
        return list(
            session.scalars(
                select(Message).where(
                    Message.tenant_id == tenant[1].tenant_id, Message.created_by_type == "portal"
                )
            )
        )
