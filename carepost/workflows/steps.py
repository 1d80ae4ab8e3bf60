"""The step types of a workflow graph and the registry they plug into.

A graph is ``{"steps": [...]}``: an ordered list of steps, the first being where a
contact enters. Each step is a Pydantic model with a ``type`` discriminator and an
``id`` unique in the graph; the pointers to other steps (``next``, a branch's
paths, a Go To's ``target``, a wait's ``timeout_next``) are step ids, and a step
without a following step ends the run (completed).

Adding a step type (Send Text, say) is one module: a model subclassing
:class:`StepBase` and a handler (:mod:`carepost.workflows.engine`), registered
with :func:`register_step`. :func:`graph_adapter` rebuilds the discriminated
union from the registry, so the API, validation and the engine see the new type.
"""

from __future__ import annotations

import uuid
from datetime import time
from functools import cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)

StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_STEPS = 200


class Duration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=0, ge=0, le=3650)
    hours: int = Field(default=0, ge=0, le=100_000)
    minutes: int = Field(default=0, ge=0, le=10_000_000)

    @property
    def seconds(self) -> int:
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not a known IANA time zone") from None
    return name


class StepBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StepId
    name: str = Field(default="", max_length=200)

    def successors(self) -> list[tuple[str, str]]:
        """(field, step id) of every step this one may lead to."""
        return []


class Linear(StepBase):
    next: StepId | None = None

    def successors(self) -> list[tuple[str, str]]:
        return [("next", self.next)] if self.next else []


class SendEmail(Linear):
    type: Literal["send_email"]
    template_id: uuid.UUID
    purpose: Literal["marketing", "transactional"] = "marketing"


class WaitDuration(Linear):
    type: Literal["wait_duration"]
    duration: Duration

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError("a wait lasts at least one minute")
        return value


class UntilDate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["date"]
    at: AwareDatetime


class UntilField(BaseModel):
    """Relative to a contact date field: ``offset_minutes`` before (negative) or after
    it; a date-only value is read at ``at_time`` in the contact's (or the step's) zone."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["field"]
    field: str = Field(min_length=1, max_length=40)
    offset_minutes: int = Field(default=0, ge=-525_600 * 5, le=525_600 * 5)
    at_time: time = time(9, 0)
    timezone: str = "UTC"
    contact_timezone: bool = True

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)


class UntilWindow(BaseModel):
    """The next instant inside ``start``-``end`` local time on a matching day (both
    day lists must match when both are given), in ``timezone`` or the contact's own."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["window"]
    days_of_week: list[Annotated[int, Field(ge=0, le=6)]] | None = None  # 0 = Monday
    days_of_month: list[Annotated[int, Field(ge=1, le=31)]] | None = None
    start: time = time(0, 0)
    end: time = time(23, 59, 59)
    timezone: str = "UTC"
    contact_timezone: bool = False

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)


Until = Annotated[UntilDate | UntilField | UntilWindow, Field(discriminator="kind")]


class WaitUntil(Linear):
    type: Literal["wait_until"]
    until: Until


class EventSpec(BaseModel):
    """What a Wait for Event waits for. ``custom``: a named contact event; ``opened`` /
    ``clicked``: the email of ``step`` (default: the run's latest email step);
    ``field_changed``: a contact field (by key) changed."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["custom", "opened", "clicked", "field_changed", "form_submitted"]
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    step: StepId | None = None
    field: str | None = Field(default=None, max_length=40)
    # clicked: only a click of this link (0-based, in the email's order); form_submitted:
    # the form whose submission ends the wait.
    link: int | None = Field(default=None, ge=0, le=999)
    form_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _complete(self) -> EventSpec:
        if self.kind == "custom" and not self.name:
            raise ValueError("a custom event needs its name")
        if self.kind == "field_changed" and not self.field:
            raise ValueError("a field change needs the field's key")
        if self.kind == "form_submitted" and self.form_id is None:
            raise ValueError("a form submission needs the form's id")
        if self.link is not None and self.kind != "clicked":
            raise ValueError("only a click names a link")
        return self

    def key(self) -> str:
        if self.kind == "custom":
            return f"custom:{self.name}"
        if self.kind == "field_changed":
            return f"field:{self.field}"
        if self.kind == "form_submitted":
            return f"form:{self.form_id}"
        if self.kind == "clicked" and self.link is not None:
            return f"email.clicked.link:{self.link}"
        return f"email.{self.kind}"


class WaitForEvent(Linear):
    type: Literal["wait_for_event"]
    event: EventSpec
    timeout: Duration
    timeout_next: StepId | None = None

    def successors(self) -> list[tuple[str, str]]:
        found = super().successors()
        return found + ([("timeout_next", self.timeout_next)] if self.timeout_next else [])


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: dict[str, Any]
    next: StepId


class Branch(StepBase):
    type: Literal["branch"]
    conditions: list[Condition] = Field(min_length=1, max_length=20)
    fallback: StepId | None = None

    def successors(self) -> list[tuple[str, str]]:
        paths = [(f"conditions/{i}/next", c.next) for i, c in enumerate(self.conditions)]
        return paths + ([("fallback", self.fallback)] if self.fallback else [])


class GoTo(StepBase):
    type: Literal["goto"]
    target: StepId

    def successors(self) -> list[tuple[str, str]]:
        return [("target", self.target)]


class ListAdd(Linear):
    type: Literal["list_add"]
    list_id: uuid.UUID


class ListRemove(Linear):
    type: Literal["list_remove"]
    list_id: uuid.UUID


class SetStage(Linear):
    type: Literal["set_stage"]
    stage: str = Field(min_length=1, max_length=40)


class CallWebhook(Linear):
    """Queue a signed ``workflow.step`` event (ids only, never PHI) to one of the
    organization's webhook endpoints; the webhook worker signs, sends and retries it."""

    type: Literal["webhook"]
    endpoint_id: uuid.UUID


class Exit(StepBase):
    type: Literal["exit"]


# --- the registry ------------------------------------------------------------------

STEP_TYPES: dict[str, type[StepBase]] = {}


@cache
def graph_adapter() -> TypeAdapter[Any]:
    """A validator of ``{"steps": [...]}`` over every registered step type."""
    step = Annotated[_union(), Field(discriminator="type")]  # type: ignore[valid-type]
    graph = create_model(
        "Graph",
        __config__=ConfigDict(extra="forbid"),
        steps=(list[step], Field(min_length=1, max_length=MAX_STEPS)),  # type: ignore[valid-type]
    )
    return TypeAdapter(graph)


def _union() -> Any:
    from typing import Union

    return Union[tuple(STEP_TYPES.values())]  # noqa: UP007 - built from the registry at run time


def register_step(model: type[StepBase]) -> type[StepBase]:
    """Make a step type part of the graph language (its ``type`` literal names it)."""
    name = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    if name in STEP_TYPES:
        raise ValueError(f"a step type named {name!r} is already registered")
    STEP_TYPES[name] = model
    graph_adapter.cache_clear()
    return model


for _model in (
    SendEmail,
    WaitDuration,
    WaitUntil,
    WaitForEvent,
    Branch,
    GoTo,
    ListAdd,
    ListRemove,
    SetStage,
    CallWebhook,
    Exit,
):
    register_step(_model)


class GraphShape(BaseModel):
    """A graph as stored (steps kept as their models)."""

    model_config = ConfigDict(extra="forbid")
    steps: list[StepBase] = Field(min_length=1, max_length=MAX_STEPS)

    def by_id(self) -> dict[str, StepBase]:
        return {step.id: step for step in self.steps}

    @property
    def start(self) -> str:
        return self.steps[0].id


def parse_graph(raw: Any) -> GraphShape:
    """The graph's steps as models (raises pydantic.ValidationError on a bad shape)."""
    parsed = graph_adapter().validate_python(raw)
    return GraphShape.model_construct(steps=list(parsed.steps))


def dump_graph(graph: GraphShape) -> dict[str, Any]:
    return {"steps": [step.model_dump(mode="json", exclude_defaults=False) for step in graph.steps]}


class GoToWorkflow(StepBase):
    """Move the contact into another workflow (its entry, or ``step``): this run
    completes with outcome ``moved_to``. The no re-entry rule holds there too, so a
    contact already in (or once through) the target stays out (``loop_prevented``):
    no two workflows can bounce a contact between them."""

    type: Literal["goto_workflow"]
    workflow_id: uuid.UUID
    step: StepId | None = None


register_step(GoToWorkflow)


# Step types in their own modules register themselves on import.
from carepost.workflows import segment_step as _segment_step  # noqa: E402,F401
from carepost.workflows import update_field as _update_field  # noqa: E402,F401
