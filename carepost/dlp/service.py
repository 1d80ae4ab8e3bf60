"""The tenant's DLP rules (keyword dictionaries, MRN patterns) and the scan that uses
them. Audit entries name the rule and count terms; terms themselves are never in an
audit entry, a log line or an error (they are stored encrypted)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.dlp.extraction import MessageContent, ScanLimits
from carepost.dlp.findings import ScanResult, Severity
from carepost.dlp.models import DlpRule
from carepost.dlp.scanner import TenantRules, scan_message
from carepost.dlp.tenant_rules import Dictionary, MrnRule, clean_terms, compile_mrn_pattern

RuleKind = Literal["dictionary", "mrn_pattern"]
SEVERITIES = {severity.label: severity for severity in Severity if severity != Severity.NONE}
MAX_RULES = 200


def _audit(session: Session, rule: DlpRule, actor: audit.Actor, action: str) -> None:
    audit.record(
        session,
        tenant_id=rule.tenant_id,
        actor=actor,
        action=action,
        object_type="dlp_rule",
        object_id=rule.id,
        details={
            "name": rule.name,
            "kind": rule.kind,
            "severity": rule.severity,
            "phi": rule.phi,
            "terms": len(rule.terms or []),
        },
    )


def _check_content(
    kind: str, terms: Sequence[str] | None, pattern: str | None
) -> tuple[list[str] | None, str | None]:
    if kind == "dictionary":
        if pattern is not None:
            raise ValidationFailed("a dictionary has terms, not a pattern", field="pattern")
        if not terms:
            raise ValidationFailed("a dictionary needs at least one term", field="terms")
        return clean_terms(terms), None
    if kind == "mrn_pattern":
        if terms is not None:
            raise ValidationFailed("an MRN pattern has a pattern, not terms", field="terms")
        if pattern is None:
            raise ValidationFailed("an MRN pattern needs its pattern", field="pattern")
        compile_mrn_pattern(pattern)
        return None, pattern
    raise ValidationFailed("kind is dictionary or mrn_pattern", field="kind")


def list_rules(session: Session, tenant_id: uuid.UUID) -> list[DlpRule]:
    return list(
        session.scalars(
            select(DlpRule).where(DlpRule.tenant_id == tenant_id).order_by(DlpRule.name)
        )
    )


def get_rule(session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> DlpRule:
    rule = session.scalar(
        select(DlpRule).where(DlpRule.tenant_id == tenant_id, DlpRule.id == rule_id)
    )
    if rule is None:
        raise NotFound("no such DLP rule")
    return rule


def _name_taken(
    session: Session, tenant_id: uuid.UUID, name: str, rule_id: uuid.UUID | None
) -> bool:
    found = session.scalar(
        select(DlpRule.id).where(DlpRule.tenant_id == tenant_id, DlpRule.name == name)
    )
    return found is not None and found != rule_id


def create_rule(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    kind: RuleKind,
    terms: Sequence[str] | None = None,
    pattern: str | None = None,
    severity: str = "medium",
    phi: bool = True,
    actor: audit.Actor,
) -> DlpRule:
    if len(list_rules(session, tenant_id)) >= MAX_RULES:
        raise ValidationFailed(f"an organization has at most {MAX_RULES} DLP rules")
    if _name_taken(session, tenant_id, name, None):
        raise Conflict("a DLP rule of this name exists", field="name")
    cleaned_terms, checked_pattern = _check_content(kind, terms, pattern)
    rule = DlpRule(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        kind=kind,
        terms=cleaned_terms,
        pattern=checked_pattern,
        severity=severity,
        phi=phi,
        updated_at=utcnow(),
    )
    session.add(rule)
    session.flush()
    _audit(session, rule, actor, "dlp_rule.create")
    return rule


def update_rule(
    session: Session,
    tenant_id: uuid.UUID,
    rule_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> DlpRule:
    rule = get_rule(session, tenant_id, rule_id)
    name = changes.get("name")
    if name is not None and _name_taken(session, tenant_id, name, rule.id):
        raise Conflict("a DLP rule of this name exists", field="name")
    terms = changes.get("terms", rule.terms) if rule.kind == "dictionary" else None
    pattern = changes.get("pattern", rule.pattern) if rule.kind == "mrn_pattern" else None
    if rule.kind == "dictionary" and changes.get("pattern") is not None:
        raise ValidationFailed("a dictionary has terms, not a pattern", field="pattern")
    if rule.kind == "mrn_pattern" and changes.get("terms") is not None:
        raise ValidationFailed("an MRN pattern has a pattern, not terms", field="terms")
    rule.terms, rule.pattern = _check_content(rule.kind, terms, pattern)
    if name is not None:
        rule.name = name
    if changes.get("severity") is not None:
        rule.severity = changes["severity"]
    if changes.get("phi") is not None:
        rule.phi = bool(changes["phi"])
    rule.updated_at = utcnow()
    session.flush()
    _audit(session, rule, actor, "dlp_rule.update")
    return rule


def delete_rule(
    session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    rule = get_rule(session, tenant_id, rule_id)
    _audit(session, rule, actor, "dlp_rule.delete")
    session.delete(rule)
    session.flush()


def tenant_rules(session: Session, tenant_id: uuid.UUID) -> TenantRules:
    """The tenant's rules compiled for a scan (patterns were checked when saved)."""
    mrn: list[MrnRule] = []
    dictionaries: list[Dictionary] = []
    for rule in list_rules(session, tenant_id):
        severity = SEVERITIES.get(rule.severity, Severity.MEDIUM)
        if rule.kind == "mrn_pattern" and rule.pattern:
            mrn.append(MrnRule(rule.name, compile_mrn_pattern(rule.pattern, probe=False), severity))
        elif rule.kind == "dictionary" and rule.terms:
            dictionaries.append(Dictionary(rule.name, rule.terms, severity, rule.phi))
    return TenantRules(mrn=mrn, dictionaries=dictionaries)


def scan_for_tenant(
    session: Session,
    keys: TenantKeys,
    message: MessageContent,
    *,
    limits: ScanLimits | None = None,
) -> ScanResult:
    """Scan a message with the built-in detectors and the tenant's rules."""
    return scan_message(
        message, keys=keys, rules=tenant_rules(session, keys.tenant_id), limits=limits
    )
