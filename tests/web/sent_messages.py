"""Messages in the log for console tests: accepted by the real sending service, with
the events a delivery and a recipient would add (no worker needed)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from carepost.audit.service import SYSTEM
from carepost.domains.models import SendingDomain
from carepost.messages.events import record_message_event
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages


def _ensure_sender(session: Session, tenant_id: uuid.UUID) -> None:
    """A verified clinic.example for tenants made without the test domains."""
    found = session.query(SendingDomain).filter_by(tenant_id=tenant_id, name="clinic.example")
    if found.first() is None:
        session.add(
            SendingDomain(
                tenant_id=tenant_id,
                name="clinic.example",
                state="verified",
                created_by_type="system",
                created_by_id="tests",
            )
        )
        session.flush()


def make_message(
    runtime,
    tenant,
    *,
    to: str | None = None,
    subject: str = "Your appointment",
    html: str | None = None,
    text: str = "See you on Monday.",
    tags: Sequence[str] = ("reminder",),
    events: Sequence[tuple[str, dict[str, Any]]] = (),
) -> uuid.UUID:
    request = MessageIn.model_validate(
        {
            "to": to or f"r-{uuid.uuid4().hex[:8]}@example.org",
            "from": "care@clinic.example",
            "subject": subject,
            "text": text,
            **({"html": html} if html else {}),
            "tags": list(tags),
        }
    )
    with runtime.bound_session(tenant[1]) as session:
        _ensure_sender(session, tenant[0].id)
        [result] = send_messages(
            session,
            tenant[1],
            [(request, None)],
            SendContext(SYSTEM, SendLimits(1024 * 1024, "https://testserver")),
        )
        assert result.id is not None, result
        for kind, detail in events:
            record_message_event(session, tenant[1], result.id, kind, detail=detail)
        return result.id
