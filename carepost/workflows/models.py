"""Workflows, their published versions, contacts' runs through them and the waits
that events resolve.

A workflow's editable graph is ``draft`` (JSON, checked by
:mod:`carepost.workflows.steps`); activating or editing an active workflow
publishes it as a numbered, immutable :class:`WorkflowVersion`. A run is one
contact's way through one workflow: the step it is at, when it wakes, the steps it
has visited. ``UNIQUE (tenant_id, workflow_id, contact_id)`` is the no re-entry
rule: a contact has at most one run of a workflow, ever. Step ids, rule JSON and
codes only: no PHI in any of these tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.contacts.activity_models import BigId
from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.tenancy.models import TenantOwned


class WorkflowStatus:
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class RunStatus:
    """``active``: due to execute ``current_step`` (not yet entered); ``waiting``: in
    ``current_step`` until ``wake_at`` or an event; then ``completed`` or ``exited``."""

    ACTIVE = "active"
    WAITING = "waiting"
    COMPLETED = "completed"
    EXITED = "exited"


IN_FLIGHT = (RunStatus.ACTIVE, RunStatus.WAITING)


class Workflow(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default=WorkflowStatus.DRAFT)
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    sender_address: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    # high, normal or bulk: the queue priority of the workflow's emails.
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    draft: Mapped[dict[str, Any]] = mapped_column(JSON)
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by_type: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WorkflowVersion(TenantOwned, Base):
    __tablename__ = "workflow_versions"

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # What the publication did to runs in flight: {"moved": n, "exited": n}.
    migration: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    published_by_type: Mapped[str] = mapped_column(String(20))
    published_by_id: Mapped[str] = mapped_column(String(64), default="")


class WorkflowRun(IdMixin, Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        # No re-entry, enforced by the database whatever the code does.
        UniqueConstraint("tenant_id", "workflow_id", "contact_id"),
        # The engine's claim: runs due by wake_at (NULL once finished).
        Index("ix_workflow_runs_wake_at", "wake_at"),
        Index("ix_workflow_runs_workflow_step", "workflow_id", "current_step"),
        Index("ix_workflow_runs_contact", "contact_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default=RunStatus.ACTIVE)
    current_step: Mapped[str | None] = mapped_column(String(64), default=None)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    step_entered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Why a waiting run woke: "event" when an awaited event arrived, else "" (the timer).
    wake_reason: Mapped[str] = mapped_column(String(20), default="")
    visited: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Messages the run's email steps queued, by step id (for open/click waits).
    sent: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(40), default="manual")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A worker's claim: the run is its own until lease_until (then anyone may retake it).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    lease_owner: Mapped[str] = mapped_column(String(64), default="")


class WorkflowRunStep(Base):
    """The history of a run: each step entered, when it was left and how."""

    __tablename__ = "workflow_run_steps"
    __table_args__ = (
        Index("ix_workflow_run_steps_run", "run_id", "seq"),
        Index("ix_workflow_run_steps_workflow_step", "workflow_id", "step_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    step_type: Mapped[str] = mapped_column(String(40))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A stable code (sent, suppressed, waited, event, timeout, condition:0, ...).
    outcome: Mapped[str] = mapped_column(String(40), default="")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class WorkflowWait(Base):
    """A run waiting for an event: found by (tenant, event key, contact) when the event
    arrives, so waking never scans the runs."""

    __tablename__ = "workflow_waits"
    __table_args__ = (
        Index("ix_workflow_waits_event", "tenant_id", "event_key", "contact_id"),
        Index("ix_workflow_waits_run", "run_id"),
        Index("ix_workflow_waits_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(64))
    # custom:<name>, email.opened, email.clicked, field:<key>
    event_key: Mapped[str] = mapped_column(String(120))
    # For email waits: the message whose open or click ends the wait.
    message_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
