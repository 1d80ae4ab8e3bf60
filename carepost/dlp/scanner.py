"""Scan a message (or one text) with the built-in and the tenant's detectors.

Pure apart from the clock (the deadline): the caller passes the tenant's keys for
the fingerprints and the tenant's rules; nothing is stored or logged here. The
result holds findings (no matched text), the parts that could not be read, and
the summary the policy decision reads (:func:`carepost.policy.decision.decide_protection`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial

from carepost.dlp.detectors import BUILTIN, Detector, find_date_of_birth
from carepost.dlp.extraction import Deadline, MessageContent, PartText, ScanLimits, message_parts
from carepost.dlp.findings import (
    Finding,
    Fingerprinter,
    Location,
    Part,
    ScanResult,
    ScanSummary,
    Severity,
    SkippedPart,
    SkipReason,
    fingerprint,
)
from carepost.dlp.tenant_rules import Dictionary, KeywordMatcher, MrnRule, PatternTimeout

# Findings kept per part: a pathological attachment must not make millions of objects.
MAX_FINDINGS_PER_PART = 5_000
# A phone-number match inside one of these is the same digits seen twice.
_NUMBERS_FIRST = frozenset({"ssn", "npi", "credit_card", "dea", "mbi"})


@dataclass(frozen=True)
class TenantRules:
    mrn: Sequence[MrnRule] = ()
    dictionaries: Sequence[Dictionary] = ()
    _matcher: list[KeywordMatcher] = field(default_factory=list, repr=False, compare=False)

    @property
    def keywords(self) -> KeywordMatcher:
        if not self._matcher:  # built once, on first use
            self._matcher.append(KeywordMatcher(self.dictionaries))
        return self._matcher[0]


NO_RULES = TenantRules()


def _location(part: PartText, start: int, end: int) -> Location:
    return Location(part.part, start, end, part.attachment_index, part.attachment_name)


def _scan_part(
    part: PartText,
    keys: Fingerprinter,
    rules: TenantRules,
    detectors: Sequence[Detector],
    deadline: Deadline,
    skipped: list[SkippedPart],
) -> list[Finding]:
    text = part.text
    findings: list[Finding] = []
    number_spans: list[tuple[int, int]] = []

    def add(detector: str, start: int, end: int, confidence: float, severity: Severity,
            phi: bool, normalized: str) -> None:  # fmt: skip
        if len(findings) < MAX_FINDINGS_PER_PART:
            findings.append(
                Finding(
                    detector=detector,
                    location=_location(part, start, end),
                    confidence=confidence,
                    severity=severity,
                    phi=phi,
                    fingerprint=fingerprint(keys, detector, normalized),
                )
            )

    def skip(reason: SkipReason) -> None:
        skipped.append(SkippedPart(part.part, reason, part.attachment_index))

    for detector in detectors:
        if deadline.passed:
            skip("time_limit")
            return findings
        if detector.name == "us_phone":
            continue  # after the others, so that their digits are not counted twice
        for match in detector.find(text):
            add(detector.name, match.start, match.end, match.confidence, detector.severity,
                detector.phi, match.normalized)  # fmt: skip
            if detector.name in _NUMBERS_FIRST:
                number_spans.append((match.start, match.end))
    phone = next((detector for detector in detectors if detector.name == "us_phone"), None)
    if phone is not None and not deadline.passed:
        number_spans.sort()
        starts = [start for start, _ in number_spans]
        for match in phone.find(text):
            at = bisect.bisect_right(starts, match.start) - 1
            if at >= 0 and number_spans[at][1] > match.start:
                continue
            add(phone.name, match.start, match.end, match.confidence, phone.severity,
                phone.phi, match.normalized)  # fmt: skip
    for rule in rules.mrn:
        if deadline.passed:
            skip("time_limit")
            return findings
        try:
            for match in rule.find(text):
                add(rule.detector, match.start, match.end, match.confidence, rule.severity,
                    True, match.normalized)  # fmt: skip
        except PatternTimeout:
            skip("pattern_timeout")
    if rules.dictionaries:
        for dictionary, match in rules.keywords.find(text):
            add(dictionary.detector, match.start, match.end, match.confidence,
                dictionary.severity, dictionary.phi, match.normalized)  # fmt: skip
    return findings


def _with_today(detectors: Sequence[Detector], today: date | None) -> Sequence[Detector]:
    """The detectors with a fixed "today" for dates of birth (tests, re-scans)."""
    if today is None:
        return detectors
    return [
        replace(detector, find=partial(find_date_of_birth, today=today))
        if detector.name == "date_of_birth"
        else detector
        for detector in detectors
    ]


def _scan(
    parts: Iterable[PartText],
    keys: Fingerprinter,
    rules: TenantRules,
    detectors: Sequence[Detector],
    deadline: Deadline,
    skipped: list[SkippedPart],
) -> ScanResult:
    findings: list[Finding] = []
    for part in parts:
        findings.extend(_scan_part(part, keys, rules, detectors, deadline, skipped))
    return ScanResult(tuple(findings), tuple(skipped), ScanSummary.of(findings, skipped))


def scan_message(
    message: MessageContent,
    *,
    keys: Fingerprinter,
    rules: TenantRules = NO_RULES,
    detectors: Sequence[Detector] = BUILTIN,
    limits: ScanLimits | None = None,
    today: date | None = None,
    skipped_before: Sequence[SkippedPart] = (),
) -> ScanResult:
    """Every finding in the message's subject, bodies and attachments.
    ``skipped_before``: parts the caller could not even hand over (MIME past its bounds)."""
    limits = limits or ScanLimits()
    deadline = Deadline(limits.max_seconds)
    skipped: list[SkippedPart] = list(skipped_before)
    parts = message_parts(message, limits, deadline, skipped)
    return _scan(parts, keys, rules, _with_today(detectors, today), deadline, skipped)


def scan_text(
    text: str,
    *,
    keys: Fingerprinter,
    part: Part = "text",
    rules: TenantRules = NO_RULES,
    detectors: Sequence[Detector] = BUILTIN,
    limits: ScanLimits | None = None,
    today: date | None = None,
) -> ScanResult:
    """Every finding in one text (a template, a subject line)."""
    limits = limits or ScanLimits()
    skipped: list[SkippedPart] = []
    if len(text) > limits.max_part_chars:
        skipped.append(SkippedPart(part, "too_large"))
        text = ""
    deadline = Deadline(limits.max_seconds)
    detectors = _with_today(detectors, today)
    return _scan([PartText(part, text)], keys, rules, detectors, deadline, skipped)
