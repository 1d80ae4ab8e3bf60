"""Stand-ins for the parts of the email engine the outbox does not call yet (see ports.py):
the envelope sender, webhooks and the sender check; each keeps the contract of the
module that replaces it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

# --- feedback and domains ------------------------------------------------------------


def return_path(message_id: uuid.UUID, *, from_address: str) -> str:
    """The envelope sender (MAIL FROM); VERP addresses replace it with feedback."""
    return from_address


def emit_webhook(
    session: Session, tenant_id: uuid.UUID, event_type: str, payload: Mapping[str, Any]
) -> int:
    """Webhook deliveries written for the event; none until feedback lands."""
    return 0


def check_sender(session: Session, tenant_id: uuid.UUID, from_address: str) -> str | None:
    """Why the tenant may not send from this address, or None. Until sending domains
    land every syntactically valid address is the tenant's."""
    return None
