"""What a DLP scan reports: findings located in the message, and their summary.

A finding never holds the matched text. It holds where the match is (the part of
the message and character offsets in that part's text), how sure the detector is,
and a *fingerprint*: HMAC-SHA256 of the normalized value under the tenant's index
key (:meth:`carepost.crypto.keyring.TenantKeys.blind_index`), so the same SSN seen
in two messages gives the same fingerprint within a tenant and different ones
across tenants, and nobody can read the value back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, Protocol

Part = Literal["subject", "text", "html", "attachment", "attachment_name"]
SkipReason = Literal["too_large", "time_limit", "unreadable", "unsupported_type", "pattern_timeout"]


class Severity(IntEnum):
    """How bad a leak of what a detector finds would be (ordered)."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Fingerprinter(Protocol):
    """What makes a fingerprint: a tenant's keys (``TenantKeys``) are one."""

    def blind_index(self, label: str, value: str) -> str: ...


def fingerprint(keys: Fingerprinter, detector: str, normalized: str) -> str:
    """The keyed fingerprint of a matched value (the value itself is never kept)."""
    return keys.blind_index(f"dlp:{detector}", normalized)


@dataclass(frozen=True)
class Location:
    """Where a finding is: a part of the message and offsets in that part's text.

    For ``html`` the offsets are in the text the HTML converts to; for attachments,
    in the text extracted from the attachment. ``attachment_name`` is the name the
    sender gave the file: the sender's own input, shown back to the sender, never
    logged.
    """

    part: Part
    start: int
    end: int
    attachment_index: int | None = None
    attachment_name: str | None = None


@dataclass(frozen=True)
class Finding:
    detector: str
    location: Location
    confidence: float
    severity: Severity
    phi: bool
    fingerprint: str

    def __repr__(self) -> str:  # short, and nothing that is not already safe
        return (
            f"Finding({self.detector}, {self.location.part}"
            f"[{self.location.start}:{self.location.end}], {self.confidence:.2f})"
        )


@dataclass(frozen=True)
class SkippedPart:
    """A part the scan could not read whole: the summary is then incomplete."""

    part: Part
    reason: SkipReason
    attachment_index: int | None = None


@dataclass(frozen=True)
class ScanSummary:
    """Counts per detector and the worst severity: what the policy decision reads."""

    counts: dict[str, int] = field(default_factory=dict)
    max_confidence: dict[str, float] = field(default_factory=dict)
    highest_severity: Severity = Severity.NONE
    phi: bool = False
    complete: bool = True

    @classmethod
    def of(cls, findings: Iterable[Finding], skipped: Iterable[SkippedPart] = ()) -> ScanSummary:
        counts: Counter[str] = Counter()
        confidence: dict[str, float] = {}
        severity = Severity.NONE
        phi = False
        for finding in findings:
            counts[finding.detector] += 1
            confidence[finding.detector] = max(
                confidence.get(finding.detector, 0.0), finding.confidence
            )
            severity = max(severity, finding.severity)
            phi = phi or finding.phi
        return cls(
            counts=dict(sorted(counts.items())),
            max_confidence=dict(sorted(confidence.items())),
            highest_severity=severity,
            phi=phi,
            complete=not list(skipped),
        )

    def as_record(self) -> dict[str, object]:
        """The summary as JSON, to store with a message (no PHI: names and numbers)."""
        return {
            "counts": self.counts,
            "max_confidence": self.max_confidence,
            "highest_severity": self.highest_severity.label,
            "phi": self.phi,
            "complete": self.complete,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ScanSummary:
        return cls(
            counts={str(k): int(v) for k, v in record.get("counts", {}).items()},
            max_confidence={str(k): float(v) for k, v in record.get("max_confidence", {}).items()},
            highest_severity=Severity[str(record.get("highest_severity", "none")).upper()],
            phi=bool(record.get("phi", False)),
            complete=bool(record.get("complete", False)),
        )

    def detectors_at(self, min_confidence: float) -> frozenset[str]:
        """The detectors with at least one finding at ``min_confidence`` or above."""
        return frozenset(
            name for name, value in self.max_confidence.items() if value >= min_confidence
        )


@dataclass(frozen=True)
class ScanResult:
    findings: tuple[Finding, ...]
    skipped: tuple[SkippedPart, ...]
    summary: ScanSummary
