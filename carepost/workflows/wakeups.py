"""Waking waiting runs at once from the places events happen, through the wait index.

Every function here finds the runs to wake through ``workflow_waits`` (indexed by
tenant, event key and contact, and by message), sets their ``wake_at`` to now with
``wake_reason = "event"`` and deletes their waits, in the caller's transaction: an
event recorded and the runs it wakes commit (or roll back) together, and nothing
scans the runs. The next ``workflows.advance`` round (every second) moves them on.

* :func:`on_tracking_hit` -- an open or click recorded by
  :func:`carepost.tracking.service.record_hit` (and a click of one given link);
* :func:`on_fields_changed` -- contact fields changed through the API or an import
  (:mod:`carepost.contacts.service`, :mod:`carepost.contacts.upserts`);
* :func:`on_form_submitted` -- the Secure Forms interface (wakes ``form:<id>`` waits
  and enrolls into workflows triggered by that form);
* :func:`on_contact_events` -- custom events posted to ``POST /api/v1/events``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from carepost.core.database import utcnow
from carepost.workflows.models import RunStatus, WorkflowRun, WorkflowWait

BATCH = 5000


def wake_runs(session: Session, waits: object, now: datetime) -> int:
    """Wake the waiting runs a select of ``WorkflowWait.run_id`` names; how many woke."""
    run_ids = list(session.scalars(waits))  # type: ignore[call-overload]
    if not run_ids:
        return 0
    woke = 0
    for start in range(0, len(run_ids), BATCH):
        chunk = run_ids[start : start + BATCH]
        result = session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id.in_(chunk), WorkflowRun.status == RunStatus.WAITING)
            .values(wake_at=now, wake_reason="event"),
            execution_options={"synchronize_session": False},
        )
        woke += int(result.rowcount or 0)  # type: ignore[attr-defined]
        session.execute(
            delete(WorkflowWait).where(WorkflowWait.run_id.in_(chunk)),
            execution_options={"synchronize_session": False},
        )
    return woke


def wake_contacts(
    session: Session,
    tenant_id: uuid.UUID,
    contact_ids: Iterable[uuid.UUID],
    event_key: str,
    now: datetime | None = None,
) -> int:
    """Wake the runs of these contacts waiting for ``event_key`` (index: tenant, key, contact)."""
    now = now or utcnow()
    ids = sorted(set(contact_ids))
    woke = 0
    for start in range(0, len(ids), BATCH):
        waits = select(WorkflowWait.run_id).where(
            WorkflowWait.tenant_id == tenant_id,
            WorkflowWait.event_key == event_key,
            WorkflowWait.contact_id.in_(ids[start : start + BATCH]),
        )
        woke += wake_runs(session, waits, now)
    return woke


def on_tracking_hit(
    session: Session,
    message_id: uuid.UUID,
    kind: str,
    *,
    link_index: int | None = None,
    now: datetime | None = None,
) -> int:
    """An ``opened``/``clicked`` of a message was recorded: wake the runs awaiting it
    (index: message id), and for a click also those awaiting that very link."""
    keys = [f"email.{kind}"]
    if kind == "clicked" and link_index is not None:
        keys.append(f"email.clicked.link:{link_index}")
    waits = select(WorkflowWait.run_id).where(
        WorkflowWait.message_id == message_id, WorkflowWait.event_key.in_(keys)
    )
    return wake_runs(session, waits, now or utcnow())


def on_fields_changed(
    session: Session,
    tenant_id: uuid.UUID,
    changed: Mapping[str, Iterable[uuid.UUID]],
    now: datetime | None = None,
) -> int:
    """Contact fields changed: ``{field key: contact ids}``. One indexed SELECT for the
    batch (tenant, the keys, the contacts), kept to the pairs that really changed;
    the UPDATE and DELETE only when some run waits."""
    pairs = {(f"field:{key}", contact_id) for key, ids in changed.items() for contact_id in ids}
    if not pairs:
        return 0
    keys = sorted({key for key, _ in pairs})
    contacts = sorted({contact_id for _, contact_id in pairs})
    run_ids: list[uuid.UUID] = []
    for start in range(0, len(contacts), BATCH):
        rows = session.execute(
            select(WorkflowWait.run_id, WorkflowWait.event_key, WorkflowWait.contact_id).where(
                WorkflowWait.tenant_id == tenant_id,
                WorkflowWait.event_key.in_(keys),
                WorkflowWait.contact_id.in_(contacts[start : start + BATCH]),
            )
        )
        run_ids += [run_id for run_id, key, contact_id in rows if (key, contact_id) in pairs]
    if not run_ids:
        return 0
    return wake_runs(
        session, select(WorkflowRun.id).where(WorkflowRun.id.in_(run_ids)), now or utcnow()
    )


def on_form_submitted(
    session: Session,
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    form_id: uuid.UUID,
    now: datetime | None = None,
) -> tuple[int, int]:
    """The Secure Forms interface: a contact submitted a form. Wakes the runs waiting
    for it and enrolls the contact into active workflows triggered by that form;
    (woke, enrolled). The caller has checked the contact is the tenant's."""
    from carepost.workflows import entry

    now = now or utcnow()
    woke = wake_contacts(session, tenant_id, [contact_id], f"form:{form_id}", now)
    enrolled = entry.enroll_on(
        session, tenant_id, "form_submitted", str(form_id), [contact_id], now
    )
    return woke, enrolled


def on_contact_events(
    session: Session,
    tenant_id: uuid.UUID,
    by_kind: Mapping[str, Iterable[uuid.UUID]],
    now: datetime | None = None,
) -> tuple[int, int]:
    """Custom contact events recorded (``{event name: contact ids}``): wake the runs
    waiting for them and enroll into workflows triggered by them; (woke, enrolled)."""
    from carepost.workflows import entry

    now = now or utcnow()
    woke = enrolled = 0
    for name, ids in by_kind.items():
        contacts = sorted(set(ids))
        woke += wake_contacts(session, tenant_id, contacts, f"custom:{name}", now)
        enrolled += entry.enroll_on(session, tenant_id, "event", name, contacts, now)
    return woke, enrolled
