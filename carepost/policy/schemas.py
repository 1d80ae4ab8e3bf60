"""API shapes of the protection policy and of a dry-run decision."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.dlp.findings import ScanSummary
from carepost.policy.decision import Decision, DomainTls, MessageFacts, RecipientKeys
from carepost.policy.documents import PolicyDocument, check_detector
from carepost.policy.service import TenantPolicy

KeyStateIn = Literal["none", "valid", "expired", "revoked"]


class PolicyOut(BaseModel):
    document: PolicyDocument
    revision: int = Field(description="0 while the organization uses the defaults")
    updated_at: datetime | None

    @classmethod
    def of(cls, policy: TenantPolicy) -> PolicyOut:
        return cls(document=policy.document, revision=policy.revision, updated_at=policy.updated_at)


class PolicyPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: PolicyDocument
    expected_revision: int | None = Field(
        default=None, ge=0, description="Refuse the change (409) if the policy moved on since"
    )


class DecideRequest(BaseModel):
    """The inputs of one decision, as the sending path will gather them (strict: a
    number is not a yes/no)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    recipient_domain: str = Field(min_length=1, max_length=253)
    template_id: str | None = Field(default=None, max_length=36)
    template_phi: bool = False
    findings: dict[str, float] = Field(
        default_factory=dict,
        max_length=100,
        description="Detector name -> highest confidence of its findings",
    )
    scan_complete: bool = True
    smime: KeyStateIn = "none"
    openpgp: KeyStateIn = "none"
    mta_sts: Literal["enforce", "testing", "none"] = "none"
    dane_usable: bool = False
    starttls_seen: bool = False
    force_portal: bool = False

    def facts(self) -> tuple[MessageFacts, RecipientKeys, DomainTls]:
        for name in self.findings:
            check_detector(name)
        summary = ScanSummary(
            counts={name: 1 for name in self.findings},
            max_confidence=dict(self.findings),
            complete=self.scan_complete,
        )
        return (
            MessageFacts(summary, self.template_phi, self.template_id),
            RecipientKeys(self.smime, self.openpgp),
            DomainTls(self.mta_sts, self.dane_usable, self.starttls_seen),
        )


class DecisionOut(BaseModel):
    method: str
    tls: str
    phi: bool
    reasons: list[str]

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        return cls(
            method=decision.method,
            tls=decision.tls,
            phi=decision.phi,
            reasons=list(decision.reasons),
        )
