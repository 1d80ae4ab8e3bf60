"""API shapes for sending domains: their DKIM keys (public halves only), the DNS
records to publish and the result of the last DNS check."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.core.text import SingleLineText
from carepost.domains.keys import zone_text
from carepost.domains.models import DkimKey, SendingDomain
from carepost.domains.records import DnsRecord


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLineText = Field(
        min_length=1, max_length=253, description="The domain of your From addresses"
    )


class KeyOut(BaseModel):
    """A DKIM key without its private half (which never leaves carepost)."""

    selector: str
    algorithm: str
    state: Literal["next", "active", "retired"]
    public_key: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def of(cls, row: DkimKey) -> KeyOut:
        return cls(
            selector=row.selector,
            algorithm=row.algorithm,
            state=row.state,
            public_key=row.public_key,
            created_at=row.created_at,
            activated_at=row.activated_at,
            retired_at=row.retired_at,
        )


class RecordOut(BaseModel):
    kind: Literal["dkim", "spf", "dmarc"]
    type: str
    name: str
    value: str
    strings: list[str] = Field(description="The value in strings of at most 255 characters")
    zone_text: str = Field(description="The value as quoted strings, as a zone file takes it")
    selector: str | None
    key_state: str | None
    note: str

    @classmethod
    def of(cls, record: DnsRecord) -> RecordOut:
        return cls(
            kind=record.kind,
            type=record.type,
            name=record.name,
            value=record.value,
            strings=record.strings,
            zone_text=zone_text(record.value),
            selector=record.selector,
            key_state=record.key_state,
            note=record.note,
        )


class FindingOut(BaseModel):
    kind: Literal["dkim", "spf", "dmarc"]
    name: str
    level: Literal["ok", "warning", "error"]
    message: str
    found: list[str]
    expected: str | None


class CheckOut(BaseModel):
    level: Literal["ok", "warning", "error"]
    checked_at: datetime
    findings: list[FindingOut]

    @classmethod
    def of(cls, result: dict[str, Any] | None, checked_at: datetime | None) -> CheckOut | None:
        if result is None or checked_at is None:
            return None
        return cls(
            level=result["level"],
            checked_at=checked_at,
            findings=[FindingOut(**finding) for finding in result["findings"]],
        )


class DomainOut(BaseModel):
    id: uuid.UUID
    name: str
    state: Literal["pending", "verified", "failing"]
    created_at: datetime
    last_checked_at: datetime | None
    check_level: Literal["ok", "warning", "error"] | None

    @classmethod
    def of(cls, row: SendingDomain) -> DomainOut:
        return cls(
            id=row.id,
            name=row.name,
            state=row.state,
            created_at=row.created_at,
            last_checked_at=row.last_checked_at,
            check_level=(row.last_check or {}).get("level"),
        )


class DomainList(BaseModel):
    items: list[DomainOut]


class DomainDetail(DomainOut):
    keys: list[KeyOut]
    records: list[RecordOut] = Field(description="The DNS records to publish")
    last_check: CheckOut | None

    @classmethod
    def build(
        cls, row: SendingDomain, keys: list[DkimKey], records: list[DnsRecord]
    ) -> DomainDetail:
        return cls(
            **DomainOut.of(row).model_dump(),
            keys=[KeyOut.of(key) for key in keys],
            records=[RecordOut.of(record) for record in records],
            last_check=CheckOut.of(row.last_check, row.last_checked_at),
        )
