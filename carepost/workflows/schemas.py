"""API shapes of workflows (docs/workflows.md).

The graph travels as ``draft``: ``{"steps": [...]}``, checked by the service
(:mod:`carepost.workflows.validation`), whose errors point into it
(``#/body/draft/steps/2/fallback``) and name the step's id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import SingleLineText
from carepost.core.types import IsoDateTime
from carepost.workflows.models import Workflow, WorkflowRun, WorkflowRunStep
from carepost.workflows.service import MigrationPlan, StepCounts
from carepost.workflows.simulate import Simulation

DRAFT_DESCRIPTION = (
    'The graph: {"steps": [{"id", "type", ...}, ...]}, the first step is the entry; step '
    "types: "
    + ", ".join(
        (
            "send_email",
            "wait_duration",
            "wait_until",
            "wait_for_event",
            "branch",
            "goto",
            "list_add",
            "list_remove",
            "set_stage",
            "webhook",
            "exit",
            "goto_workflow",
        )
    )
)
Priority = Literal["high", "normal", "bulk"]


class WorkflowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(min_length=1, max_length=200)
    sender_address: str = Field(max_length=320)
    sender_name: SingleLineText = Field(default="", max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    priority: Priority = "normal"
    draft: dict[str, Any] = Field(description=DRAFT_DESCRIPTION)


class WorkflowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText | None = Field(default=None, min_length=1, max_length=200)
    sender_address: str | None = Field(default=None, max_length=320)
    sender_name: SingleLineText | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    priority: Priority | None = None
    draft: dict[str, Any] | None = Field(default=None, description=DRAFT_DESCRIPTION)

    def changes(self) -> dict[str, Any]:
        nullable = {"reply_to"}
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if getattr(self, name) is not None or name in nullable
        }


class WorkflowOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    sender_name: str
    sender_address: str
    reply_to: str | None
    priority: str
    current_version: int
    draft: dict[str, Any]
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, row: Workflow) -> WorkflowOut:
        return cls.model_validate(row, from_attributes=True)


class DraftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draft: dict[str, Any] = Field(description=DRAFT_DESCRIPTION)


class MigrationOut(BaseModel):
    """What publishing the draft would do to the runs in flight."""

    staying: int
    affected: int
    moved: dict[str, str] = Field(description="removed step -> the step its contacts go to")
    exiting: list[str] = Field(description="removed steps whose contacts would exit")
    affected_by_step: dict[str, int]

    @classmethod
    def of(cls, plan: MigrationPlan) -> MigrationOut:
        return cls(
            staying=plan.staying,
            affected=plan.affected,
            moved=plan.moved,
            exiting=plan.exiting,
            affected_by_step=plan.affected_by_step,
        )


class EnrollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    list_id: uuid.UUID | None = None
    segment_id: uuid.UUID | None = None


class EnrollOut(BaseModel):
    enrolled: int
    skipped: int


class RunStepOut(BaseModel):
    step_id: str
    step_type: str
    entered_at: datetime
    left_at: datetime | None
    outcome: str

    @classmethod
    def of(cls, row: WorkflowRunStep) -> RunStepOut:
        return cls.model_validate(row, from_attributes=True)


class RunOut(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID
    version: int
    status: str
    current_step: str | None
    entered_at: datetime
    wake_at: datetime | None
    ended_at: datetime | None
    visited: list[str]
    source: str

    @classmethod
    def of(cls, row: WorkflowRun) -> RunOut:
        return cls.model_validate(row, from_attributes=True)


class CountsOut(BaseModel):
    current: dict[str, int] = Field(description="contacts at each step now")
    processed: dict[str, int] = Field(description="contacts that went through each step, ever")
    runs: dict[str, int] = Field(description="runs by status")

    @classmethod
    def of(cls, counts: StepCounts) -> CountsOut:
        return cls(current=counts.current, processed=counts.processed, runs=counts.runs)


class SimulateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID
    start_at: datetime | None = None
    events: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Awaited events assumed to happen (custom:<name>, email.opened, ...)",
    )


class SimulatedStepOut(BaseModel):
    step_id: str
    type: str
    at: datetime
    outcome: str


class SimulationOut(BaseModel):
    path: list[SimulatedStepOut]
    ends: str

    @classmethod
    def of(cls, simulation: Simulation) -> SimulationOut:
        return cls(
            path=[
                SimulatedStepOut(step_id=s.step_id, type=s.type, at=s.at, outcome=s.outcome)
                for s in simulation.path
            ],
            ends=simulation.ends,
        )


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID
    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    occurred_at: IsoDateTime | None = None
    form_id: uuid.UUID | None = Field(
        default=None,
        description='With name "form_submitted": the form submitted (wakes form waits, '
        "enrolls into workflows triggered by that form)",
    )


class EventOut(BaseModel):
    woke: int


TRIGGER_DESCRIPTION = (
    "How contacts enter the workflow on their own, or null (by hand and the API only): "
    '{"kind": "list_join", "list_id"}, {"kind": "segment_entry", "segment_id"}, '
    '{"kind": "date_milestone", "field", "days_before", "yearly"}, '
    '{"kind": "form_submitted", "form_id"}, {"kind": "event", "name"}'
)


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trigger: dict[str, Any] | None = Field(description=TRIGGER_DESCRIPTION)


class TriggerOut(BaseModel):
    trigger: dict[str, Any] | None = Field(description=TRIGGER_DESCRIPTION)
