"""The tenant's protection policy document: defaults, per-domain and per-template
overrides. Pydantic models, so a wrong document is refused with the field at fault
(``defaults.phi_without_tls``, ``domains.example.org.e2e_preference``)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from carepost.dlp.detectors import ALL_DETECTORS, TENANT_DETECTORS

E2eMethod = Literal["smime", "openpgp"]
_DOMAIN = re.compile(r"^(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
MAX_OVERRIDES = 500

DEFAULT_PHI_DETECTORS = (
    "ssn",
    "mbi",
    "icd10",
    "date_of_birth",
    "mrn",
    "keyword",
)


def _default_preference() -> list[E2eMethod]:
    return ["smime", "openpgp"]


def check_detector(name: str) -> str:
    """A built-in detector name, ``mrn``/``keyword`` (every tenant rule of the kind) or
    ``mrn:<rule>``/``keyword:<dictionary>``."""
    kind, _, rule = name.partition(":")
    if name in ALL_DETECTORS or (kind in TENANT_DETECTORS and rule):
        return name
    raise ValueError(f"unknown detector (one of {', '.join(sorted(ALL_DETECTORS))})")


def selects(selector: str, detector: str) -> bool:
    """Whether a policy's detector name covers a finding's detector."""
    return detector == selector or detector.startswith(f"{selector}:")


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator(
        "block_detectors", "portal_detectors", "phi_detectors", mode="after", check_fields=False
    )
    @classmethod
    def _detectors(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_detector(name) for name in value]

    @field_validator("e2e_preference", mode="after", check_fields=False)
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each method at most once")
        return value


class ProtectionRules(_Rules):
    """How to protect a message; every field can be overridden per domain or template."""

    # End-to-end methods to try, in order, when the recipient has a valid key.
    e2e_preference: list[E2eMethod] = Field(default_factory=_default_preference)
    # Use a recipient's valid key even when the message carries no PHI.
    e2e_for_all: bool = True
    # Deliver PHI by TLS only when the MX is verified (MTA-STS enforce or DANE);
    # "starttls" also accepts a STARTTLS seen without verification.
    phi_tls_minimum: Literal["verified", "starttls"] = "verified"
    # PHI that TLS cannot carry (and no E2E key): portal pickup or refuse.
    phi_without_tls: Literal["portal", "block"] = "portal"
    # PHI must go end to end or by portal, never by TLS alone.
    phi_requires_e2e: bool = False
    # Messages without PHI: insist on TLS or use it when offered.
    non_phi_tls: Literal["required", "opportunistic"] = "opportunistic"
    # Findings of these detectors block the message.
    block_detectors: list[str] = Field(default_factory=lambda: ["credit_card"])
    # Findings of these send the message by E2E or portal, never by TLS alone.
    portal_detectors: list[str] = Field(default_factory=list)
    # Findings of these make the message PHI.
    phi_detectors: list[str] = Field(default_factory=lambda: list(DEFAULT_PHI_DETECTORS))
    # Findings below this confidence are ignored by the decision.
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    # A scan that could not read every part counts as PHI found.
    incomplete_scan_is_phi: bool = True


class RulesOverride(_Rules):
    """Only the fields set replace the defaults."""

    e2e_preference: list[E2eMethod] | None = None
    e2e_for_all: bool | None = None
    phi_tls_minimum: Literal["verified", "starttls"] | None = None
    phi_without_tls: Literal["portal", "block"] | None = None
    phi_requires_e2e: bool | None = None
    non_phi_tls: Literal["required", "opportunistic"] | None = None
    block_detectors: list[str] | None = None
    portal_detectors: list[str] | None = None
    phi_detectors: list[str] | None = None
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    incomplete_scan_is_phi: bool | None = None


class SenderRules(BaseModel):
    """What a sender (an address, or ``*`` for every sender of the tenant) asks for."""

    model_config = ConfigDict(extra="forbid")

    # Every message of the sender goes by portal pickup.
    force_portal: bool = False
    # Every message of the sender counts as PHI whatever DLP finds.
    treat_as_phi: bool = False


MAX_TRUSTED_CAS = 20
MAX_CA_PEM = 20_000


# Validation context of a document read back from the database (not typed by anyone).
STORED = {"stored": True}


def _trusted_ca(pem: str, info: ValidationInfo) -> str:
    from carepost.e2ee.trust import check_trusted_ca  # the policy names no e2ee at import

    return check_trusted_ca(pem, check_dates=not (info.context or {}).get("stored"))


# One PEM CA certificate; a wrong one is refused at its index (trusted_cas/N).
TrustedCa = Annotated[str, Field(max_length=MAX_CA_PEM), AfterValidator(_trusted_ca)]


class SmimeTrust(BaseModel):
    """How far a recipient's S/MIME certificate is trusted before carepost encrypts to
    it (carepost/e2ee/trust.py, docs/encryption.md "Chain and revocation"):

    * ``require_chain``: the certificate must chain (emailProtection, within dates)
      to a trusted CA: the system store when ``use_system_store``, and ``trusted_cas``.
      Off, an uploaded certificate is used as the administrator vouched for it.
    * ``revocation``: ``off``; ``soft`` (checked by OCSP, then CRL; used when no
      answer can be had); ``hard`` (not used unless shown not revoked).
    * ``trusted_cas``: PEM certificates of CAs (roots or intermediates) the
      organization trusts, besides or, without ``use_system_store``, instead of the
      system's."""

    model_config = ConfigDict(extra="forbid")

    require_chain: bool = False
    revocation: Literal["off", "soft", "hard"] = "off"
    use_system_store: bool = True
    trusted_cas: list[TrustedCa] = Field(default_factory=list, max_length=MAX_TRUSTED_CAS)

    @property
    def checks(self) -> bool:
        """Whether anything is checked beyond the certificate's own dates and use."""
        return self.require_chain or self.revocation != "off"


class PolicyDocument(BaseModel):
    """A tenant's policy: defaults, then the recipient domain's override, then the
    template's (the most specific last)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    defaults: ProtectionRules = Field(default_factory=ProtectionRules)
    domains: dict[str, RulesOverride] = Field(default_factory=dict, max_length=MAX_OVERRIDES)
    templates: dict[str, RulesOverride] = Field(default_factory=dict, max_length=MAX_OVERRIDES)
    # Per sender address (or "*"): carepost/protection reads these at send time.
    senders: dict[str, SenderRules] = Field(default_factory=dict, max_length=MAX_OVERRIDES)
    # Recipient S/MIME certificates: chain and revocation checks before use.
    smime_trust: SmimeTrust = Field(default_factory=SmimeTrust)

    @field_validator("senders", mode="before")
    @classmethod
    def _sender_addresses(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        cleaned: dict[str, object] = {}
        for name, rules in value.items():
            address = str(name).strip().lower()
            if address != "*" and (address.count("@") != 1 or len(address) > 320):
                raise ValueError("keys are sender addresses or *")
            cleaned[address] = rules
        return cleaned

    @field_validator("domains", mode="before")
    @classmethod
    def _domain_names(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        cleaned: dict[str, object] = {}
        for name, rules in value.items():
            domain = str(name).strip().lower().rstrip(".")
            if not _DOMAIN.match(domain):
                raise ValueError("keys are domain names (example.org or *.example.org)")
            cleaned[domain] = rules
        return cleaned

    @field_validator("templates", mode="before")
    @classmethod
    def _template_ids(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        cleaned: dict[str, object] = {}
        for name, rules in value.items():
            try:
                cleaned[str(uuid.UUID(str(name)))] = rules
            except ValueError:
                raise ValueError("keys are template ids (UUIDs)") from None
        return cleaned


DEFAULT_POLICY = PolicyDocument()
