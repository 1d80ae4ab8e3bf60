"""How each workflow is entered on its own: one trigger row per workflow.

``kind`` names the trigger (:mod:`carepost.workflows.triggers`: ``list_join``,
``segment_entry``, ``date_milestone``, ``form_submitted``, ``event``) and ``ref``
the thing it listens to (a list, segment or form id, an event name, a field key),
so a hook finds the workflows to enroll into by ``(tenant, kind, ref)`` through an
index, never by reading every workflow. ``checked_at`` is a periodic trigger's last
evaluation. Ids, keys and settings only: no PHI.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, UTCDateTime
from carepost.tenancy.models import TenantOwned


class WorkflowTrigger(TenantOwned, Base):
    __tablename__ = "workflow_triggers"
    __table_args__ = (Index("ix_workflow_triggers_kind_ref", "tenant_id", "kind", "ref"),)

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(30))
    ref: Mapped[str] = mapped_column(String(120), default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkflowTriggerBaseline(TenantOwned, Base):
    """The members of a ``segment_entry`` trigger's segment when it was set with
    ``existing_members: skip``: they are not enrolled while they stay members. Each
    evaluation first deletes the rows of contacts no longer in the segment, so a member
    who leaves and comes back *enters* and is enrolled. No foreign key to ``contacts``
    (a deleted contact's row goes at the next evaluation: it no longer matches)."""

    __tablename__ = "workflow_trigger_baseline"

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
