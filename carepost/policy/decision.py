"""The protection decision: how one message goes to one recipient.

:func:`decide_protection` is a pure function of the tenant's policy, the message's
DLP summary and template PHI flag, the recipient's keys, the recipient domain's TLS
capability and the sender's settings. It returns the method (TLS required, TLS
opportunistic, S/MIME, OpenPGP, portal pickup or block), the TLS the delivery needs,
and machine-readable reasons. The caller fetches the inputs, writes the audit entry
with the reasons and acts. The rules, in order:

1. A finding of a block detector blocks the message.
2. PHI is the template's flag, a finding of a PHI detector at the policy's minimum
   confidence, or a scan that could not read every part (unless the policy says not).
3. The sender may ask for portal pickup (or for every message to count as PHI).
4. A valid recipient key is used, in the tenant's order of preference, for PHI and
   (by default) for everything; expired or revoked keys never.
5. PHI without a key goes by TLS only if the domain's TLS is guaranteed (MTA-STS in
   enforce mode or usable DANE TLSA; or STARTTLS seen, when the policy accepts it)
   and no detector demands more; else by the fallback (portal by default, or block).
   PHI never goes in plaintext and never "opportunistically".
6. A message without PHI goes by TLS, required or opportunistic as the policy says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from carepost.dlp.findings import ScanSummary
from carepost.policy.documents import (
    DEFAULT_POLICY,
    E2eMethod,
    PolicyDocument,
    ProtectionRules,
    selects,
)

Method = Literal["tls_required", "tls_opportunistic", "smime", "openpgp", "portal", "block"]
# The last three: a key that failed when used (its certificate did not chain to a
# trusted CA, its revocation status was unknown under hard-fail, or encryption failed).
KeyState = Literal[
    "none", "valid", "expired", "revoked", "untrusted", "revocation_unknown", "failed"
]
# What the delivery needs: a verified MX certificate (per MTA-STS or DANE), STARTTLS
# without verification, TLS when offered, or no delivery at all (block).
TlsRequirement = Literal["verified", "starttls", "opportunistic", "none"]


@dataclass(frozen=True)
class RecipientKeys:
    smime: KeyState = "none"
    openpgp: KeyState = "none"

    def state(self, method: E2eMethod) -> KeyState:
        return self.smime if method == "smime" else self.openpgp


@dataclass(frozen=True)
class DomainTls:
    """What is known of the recipient domain's TLS (RFC 8461 MTA-STS, RFC 7672 DANE)."""

    mta_sts: Literal["enforce", "testing", "none"] = "none"
    dane_usable: bool = False
    starttls_seen: bool = False

    @property
    def verified(self) -> bool:
        return self.mta_sts == "enforce" or self.dane_usable


@dataclass(frozen=True)
class SenderSettings:
    force_portal: bool = False
    treat_as_phi: bool = False


@dataclass(frozen=True)
class MessageFacts:
    dlp: ScanSummary = field(default_factory=ScanSummary)
    template_phi: bool = False
    template_id: str | None = None


@dataclass(frozen=True)
class Decision:
    method: Method
    tls: TlsRequirement
    reasons: tuple[str, ...]
    phi: bool


def rules_for(
    policy: PolicyDocument, recipient_domain: str, template_id: str | None
) -> tuple[ProtectionRules, list[str]]:
    """The defaults with the domain's override (exact name, else the closest
    ``*.parent`` wildcard) and then the template's; and reasons naming them."""
    merged = policy.defaults.model_dump()
    reasons: list[str] = []
    domain = recipient_domain.strip().lower().rstrip(".")
    override = policy.domains.get(domain)
    matched = domain
    if override is None:
        labels = domain.split(".")
        for cut in range(1, len(labels) - 1):
            wildcard = "*." + ".".join(labels[cut:])
            if wildcard in policy.domains:
                override, matched = policy.domains[wildcard], wildcard
                break
    if override is not None:
        merged.update(override.model_dump(exclude_none=True))
        reasons.append(f"override.domain:{matched}")
    if template_id is not None and template_id in policy.templates:
        merged.update(policy.templates[template_id].model_dump(exclude_none=True))
        reasons.append(f"override.template:{template_id}")
    return ProtectionRules.model_validate(merged), reasons


def _matching(selectors: Iterable[str], detectors: Iterable[str]) -> list[str]:
    return sorted({d for d in detectors for s in selectors if selects(s, d)})


def decide_protection(
    *,
    recipient_domain: str,
    message: MessageFacts,
    keys: RecipientKeys = RecipientKeys(),
    tls: DomainTls = DomainTls(),
    sender: SenderSettings = SenderSettings(),
    policy: PolicyDocument = DEFAULT_POLICY,
) -> Decision:
    rules, reasons = rules_for(policy, recipient_domain, message.template_id)
    found = message.dlp.detectors_at(rules.min_confidence)

    blocking = _matching(rules.block_detectors, found)
    if blocking:
        reasons.extend(f"dlp.block:{name}" for name in blocking)
        return Decision("block", "none", tuple(reasons), phi=message.dlp.phi)

    phi_reasons: list[str] = []
    if message.template_phi:
        phi_reasons.append("phi.template")
    phi_reasons.extend(f"phi.dlp:{name}" for name in _matching(rules.phi_detectors, found))
    if not message.dlp.complete and rules.incomplete_scan_is_phi:
        phi_reasons.append("phi.scan_incomplete")
    if sender.treat_as_phi:
        phi_reasons.append("phi.sender")
    phi = bool(phi_reasons)
    reasons.extend(phi_reasons or ["phi.none"])
    demanding = _matching(rules.portal_detectors, found)
    reasons.extend(f"dlp.portal:{name}" for name in demanding)

    if sender.force_portal:
        reasons.append("sender.force_portal")
        return Decision("portal", "opportunistic", tuple(reasons), phi)

    if phi or rules.e2e_for_all:
        for method in rules.e2e_preference:
            state = keys.state(method)
            if state == "valid":
                reasons.append(f"e2e.{method}:valid")
                return Decision(method, _transport(tls), tuple(reasons), phi)
            if state != "none":
                reasons.append(f"e2e.{method}:{state}")

    if not phi and not demanding:
        if rules.non_phi_tls == "required":
            reasons.append("tls.required_by_policy")
            return Decision("tls_required", _required(tls, "starttls"), tuple(reasons), phi)
        reasons.append("tls.opportunistic")
        return Decision("tls_opportunistic", "opportunistic", tuple(reasons), phi)

    reasons.extend(_tls_reasons(tls))
    tls_enough = tls.verified or (rules.phi_tls_minimum == "starttls" and tls.starttls_seen)
    if tls_enough and not demanding and not rules.phi_requires_e2e:
        return Decision("tls_required", _required(tls, rules.phi_tls_minimum), tuple(reasons), phi)
    if rules.phi_requires_e2e:
        reasons.append("policy.phi_requires_e2e")
    elif not tls_enough:
        reasons.append("tls.not_guaranteed")
    reasons.append(f"fallback.{rules.phi_without_tls}")
    if rules.phi_without_tls == "block":
        return Decision("block", "none", tuple(reasons), phi)
    return Decision("portal", "opportunistic", tuple(reasons), phi)


def _transport(tls: DomainTls) -> TlsRequirement:
    """The content is encrypted end to end; the transport still uses the best TLS known."""
    return "verified" if tls.verified else "opportunistic"


def _required(tls: DomainTls, minimum: str) -> TlsRequirement:
    return "verified" if tls.verified or minimum == "verified" else "starttls"


def _tls_reasons(tls: DomainTls) -> list[str]:
    reasons = [f"tls.mta_sts:{tls.mta_sts}"]
    if tls.dane_usable:
        reasons.append("tls.dane")
    if tls.starttls_seen:
        reasons.append("tls.starttls_seen")
    return reasons
