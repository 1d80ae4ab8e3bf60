"""The PHI of a message event, for the endpoints that asked for it (``include_phi``).

Events carry ids and codes only (carepost/messages/events.py). An endpoint whose
tenant enabled ``include_phi`` (a business associate's system that may hold PHI)
also gets, under the payload's ``"phi"`` key: the recipient's address and name, the
message's subject, and the contact's id, first and last name. Other endpoints never
do: :func:`carepost.webhooks.rules.split_phi` keeps the two apart, and this lookup
runs only when at least one subscribed endpoint includes PHI, so tenants without such
an endpoint pay nothing for it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session


def message_phi(session: Session, tenant_id: uuid.UUID, message_id: object) -> dict[str, Any]:
    """The PHI of one message of the tenant ({} when it is unknown). Needs the
    tenant's keys bound (the columns are encrypted)."""
    # Imported here: the outbox imports the webhooks (through its ports) at load time.
    from carepost.contacts.models import Contact
    from carepost.messages.models import Message

    try:
        key = message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(str(message_id))
    except ValueError:
        return {}
    row = session.execute(
        select(Message.to_address, Message.to_name, Message.subject, Message.contact_id).where(
            Message.id == key, Message.tenant_id == tenant_id
        )
    ).one_or_none()
    if row is None:
        return {}
    to_address, to_name, subject, contact_id = row
    found: dict[str, Any] = {"recipient": to_address, "to_name": to_name, "subject": subject}
    if contact_id is not None:
        names = session.execute(
            select(Contact.first_name, Contact.last_name).where(
                Contact.id == contact_id, Contact.tenant_id == tenant_id
            )
        ).one_or_none()
        contact: dict[str, Any] = {"id": str(contact_id)}
        if names is not None:
            contact |= {"first_name": names[0], "last_name": names[1]}
        found["contact"] = contact
    return found
