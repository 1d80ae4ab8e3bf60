"""The one stand-in left behind the outbox's seam (see ports.py): the sender check,
until verified sending domains restrict the From address."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

# --- feedback and domains ------------------------------------------------------------


def check_sender(session: Session, tenant_id: uuid.UUID, from_address: str) -> str | None:
    """Why the tenant may not send from this address, or None. Until sending domains
    land every syntactically valid address is the tenant's."""
    return None
