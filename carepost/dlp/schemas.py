"""API shapes of DLP rules and dry-run scans. A scan's answer has detectors,
locations, confidences and fingerprints: never the matched text, nor the text of
the message or the names of its attachments (the caller sent them)."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from carepost.dlp.extraction import Attachment, MessageContent
from carepost.dlp.findings import Finding, ScanResult, SkippedPart
from carepost.dlp.models import DlpRule

RuleName = str
SeverityLabel = Literal["low", "medium", "high", "critical"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")


def _check_name(value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError("lower-case letters, digits, - and _, up to 60, starting alphanumeric")
    return value


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="e.g. controlled-substances; findings show as keyword:<name>")
    kind: Literal["dictionary", "mrn_pattern"]
    terms: list[str] | None = Field(
        default=None, max_length=10_000, description="Dictionary terms (whole words, any case)"
    )
    pattern: str | None = Field(
        default=None, max_length=200, description="MRN regular expression (regex syntax)"
    )
    severity: SeverityLabel = "medium"
    phi: bool = True

    _name = field_validator("name")(_check_name)


class RuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    terms: list[str] | None = Field(default=None, max_length=10_000)
    pattern: str | None = Field(default=None, max_length=200)
    severity: SeverityLabel | None = None
    phi: bool | None = None

    _name = field_validator("name")(_check_name)


class RuleOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    detector: str
    terms: list[str] | None
    pattern: str | None
    severity: str
    phi: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: DlpRule) -> RuleOut:
        prefix = "keyword" if rule.kind == "dictionary" else "mrn"
        return cls(
            id=rule.id,
            name=rule.name,
            kind=rule.kind,
            detector=f"{prefix}:{rule.name}",
            terms=rule.terms,
            pattern=rule.pattern,
            severity=rule.severity,
            phi=rule.phi,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )


class RuleList(BaseModel):
    items: list[RuleOut]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    content_base64: str = Field(description="The file, base64")

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        return value


class ScanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(default="", max_length=2000)
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)

    def message(self) -> MessageContent:
        return MessageContent(
            subject=self.subject,
            text=self.text,
            html=self.html,
            attachments=[
                Attachment(a.name, a.content_type, base64.b64decode(a.content_base64))
                for a in self.attachments
            ],
        )


class FindingOut(BaseModel):
    detector: str
    part: str
    attachment_index: int | None
    start: int
    end: int
    confidence: float
    severity: str
    phi: bool
    fingerprint: str

    @classmethod
    def of(cls, finding: Finding) -> FindingOut:
        location = finding.location
        return cls(
            detector=finding.detector,
            part=location.part,
            attachment_index=location.attachment_index,
            start=location.start,
            end=location.end,
            confidence=round(finding.confidence, 3),
            severity=finding.severity.label,
            phi=finding.phi,
            fingerprint=finding.fingerprint,
        )


class SkippedOut(BaseModel):
    part: str
    attachment_index: int | None
    reason: str

    @classmethod
    def of(cls, skipped: SkippedPart) -> SkippedOut:
        return cls(
            part=skipped.part, attachment_index=skipped.attachment_index, reason=skipped.reason
        )


class SummaryOut(BaseModel):
    counts: dict[str, int]
    highest_severity: str
    phi: bool
    complete: bool


class ScanOut(BaseModel):
    findings: list[FindingOut]
    skipped: list[SkippedOut]
    summary: SummaryOut

    @classmethod
    def of(cls, result: ScanResult) -> ScanOut:
        summary = result.summary
        return cls(
            findings=[FindingOut.of(finding) for finding in result.findings],
            skipped=[SkippedOut.of(skipped) for skipped in result.skipped],
            summary=SummaryOut(
                counts=summary.counts,
                highest_severity=summary.highest_severity.label,
                phi=summary.phi,
                complete=summary.complete,
            ),
        )
