"""Pydantic shapes of the audit trail for the REST API and the console.

The tenant is never a filter a client sends: the API layer takes it from the
authenticated principal and passes it to :func:`carepost.audit.query.list_events`
separately, so no filter can reach another organization's chain.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from carepost.core.text import SingleLineText
from carepost.core.types import IsoDateTime

ExportFormat = Literal["csv", "jsonl"]


class AuditFilters(BaseModel):
    """Which events to list or export; every given filter must match (AND).

    ``action`` is exact (``auth.sign_in``) or a prefix when it ends with ``.`` or
    ``*`` (``auth.`` or ``auth.*`` for every sign-in related event). ``since`` is
    inclusive, ``until`` exclusive; both must carry a time zone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor_id: SingleLineText | None = Field(default=None, min_length=1, max_length=64)
    actor_type: SingleLineText | None = Field(default=None, min_length=1, max_length=20)
    action: SingleLineText | None = Field(default=None, min_length=1, max_length=81)
    object_type: SingleLineText | None = Field(default=None, min_length=1, max_length=40)
    object_id: SingleLineText | None = Field(default=None, min_length=1, max_length=64)
    outcome: SingleLineText | None = Field(default=None, min_length=1, max_length=20)
    since: IsoDateTime | None = None
    until: IsoDateTime | None = None

    @model_validator(mode="after")
    def _window_in_order(self) -> Self:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self

    @property
    def action_prefix(self) -> str | None:
        """The prefix to match when ``action`` asks for one, else ``None``."""
        if self.action is None:
            return None
        if self.action.endswith("*"):
            return self.action[:-1]
        if self.action.endswith("."):
            return self.action
        return None


class AuditEventOut(BaseModel):
    """One event as the API shows and exports it, hashes included for re-verification."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    chain: str
    seq: int
    tenant_id: uuid.UUID | None
    occurred_at: AwareDatetime
    actor_type: str
    actor_id: str
    actor_label: str
    action: str
    outcome: str
    object_type: str
    object_id: str
    client_address: str
    reason: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEventPage(BaseModel):
    """One page of events, newest first; pass ``next_cursor`` back for the next page."""

    items: list[AuditEventOut]
    next_cursor: str | None = None
