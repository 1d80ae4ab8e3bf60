"""A live workflow for console tests: published (version 1) with one contact enrolled."""

from __future__ import annotations

import uuid
from typing import Any

from carepost.audit.service import SYSTEM
from carepost.workflows import service, triggers


def make_workflow(
    runtime: Any,
    tenant: tuple,
    template_id: uuid.UUID,
    contact_id: uuid.UUID | None = None,
    *,
    name: str = "Welcome journey",
    steps: list[dict[str, Any]] | None = None,
    activate: bool = True,
) -> uuid.UUID:
    steps = steps or [
        {"id": "welcome", "type": "send_email", "template_id": str(template_id), "next": "wait"},
        {"id": "wait", "type": "wait_duration", "duration": {"days": 3}, "next": "end"},
        {"id": "end", "type": "exit"},
    ]
    with runtime.bound_session(tenant[1]) as session:
        row = service.create_workflow(
            session,
            tenant[0].id,
            name=name,
            sender_address="care@clinic.example",
            sender_name="The Clinic",
            draft={"steps": steps},
            actor=SYSTEM,
        )
        if activate:
            service.change_status(session, tenant[0].id, row.id, "activate", actor=SYSTEM)
        if contact_id is not None:
            triggers.enroll_contacts(session, row, [contact_id], source="api")
        return row.id
