"""API shapes for journey stages (``/journey-stages``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from carepost.contacts.stages import MAX_KEY_LENGTH, MAX_LABEL_LENGTH, Stage
from carepost.core.text import SingleLineText


class JourneyStageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Lower-case letters and digits, words joined by - or _, starting with a "
        "letter (e.g. post-op); what contacts, segments and workflows hold; immutable",
    )
    label: SingleLineText = Field(min_length=1, max_length=MAX_LABEL_LENGTH)


class JourneyStageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: SingleLineText = Field(min_length=1, max_length=MAX_LABEL_LENGTH)


class JourneyStageOut(BaseModel):
    key: str
    label: str
    built_in: bool = Field(description="new, active, overdue and at-risk: they never change")
    contact_count: int = Field(description="Contacts in this stage now")
    created_at: datetime | None = Field(description="When a custom stage was defined")

    @classmethod
    def of(cls, stage: Stage) -> JourneyStageOut:
        return cls(
            key=stage.key,
            label=stage.label,
            built_in=stage.built_in,
            contact_count=stage.contact_count,
            created_at=stage.created_at,
        )


class JourneyStageList(BaseModel):
    items: list[JourneyStageOut]
