"""The send-time protection stage: each message the outbox prepares is scanned,
decided and protected before it is signed and handed to the transport.

For one message (:meth:`ProtectionStage.protect`):

1. **Facts.** The DLP scan of what it carries (subject, text, HTML before tracking,
   attachments) with the built-in and the tenant's detectors; each part's findings
   are cached by the part's digest, so a campaign of identical content is scanned
   once and only the personalized parts of each copy are scanned again; detectors
   no rule of the policy reads are not run (:mod:`carepost.protection.facts`). The
   template's PHI flag (``Message.uses_phi``), the recipient's key states from the
   key directory (valid, expired, revoked, none: one query a batch), the sender's
   settings from the policy document, and, only when the decision depends on it, the
   recipient domain's TLS (:mod:`carepost.protection.domain_tls`).
2. **Decision.** :func:`carepost.policy.decision.decide_protection`, pure. Portal
   notices (``created_by_type == "portal"``) carry no PHI and are never sent to the
   portal again: they go by TLS when offered (reason ``portal.notice``).
3. **Record.** The method, the TLS requirement and the reasons (detector names and
   rule codes, never content) on the message row, and one audit entry
   ``message.protection`` per decision (written for the whole batch at once).
4. **Act.** ``smime``/``openpgp``: encrypted to the recipient's key (and signed with
   the tenant's key when it has one) by :func:`carepost.e2ee.directory.protect_message`;
   the caller DKIM-signs the protected bytes. ``tls_required``: the envelope carries
   the requirement and the transport enforces it. ``portal``: handed to the portal
   (:func:`carepost.portal.handoff.hand_to_portal`) and marked delivered, "held for
   secure portal pickup", with a ``portal`` event. ``block``: failed, with the
   blocking detectors as the reason.

A message whose E2E key turns out unusable at encryption time (revoked a moment
ago) goes to the portal when it is PHI, else by TLS as decided without the key.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts.id_sets import dialect_of, id_in
from carepost.core.config import Settings
from carepost.core.errors import CarepostError
from carepost.core.logging import get_logger
from carepost.crypto.keyring import TenantKeys
from carepost.delivery.transport import TlsRequirement
from carepost.dlp.findings import ScanSummary
from carepost.e2ee.directory import protect_message
from carepost.e2ee.trust import TrustChecker, checker_for
from carepost.messages.events import EventRow, write_events
from carepost.messages.models import Message, MessageState
from carepost.policy.decision import (
    Decision,
    KeyState,
    MessageFacts,
    RecipientKeys,
    SenderSettings,
    decide_protection,
)
from carepost.policy.documents import PolicyDocument
from carepost.policy.service import get_policy
from carepost.protection.domain_tls import (
    NOTHING_KNOWN,
    DomainTlsFacts,
    DomainTlsLookup,
    domain_tls,
)
from carepost.protection.facts import ContentScanner, address_key, recipient_key_states

# A key's state once it failed when used (the error's trust code, else "failed").
KEY_FAILURES: dict[str, KeyState] = {
    "revoked": "revoked",
    "untrusted": "untrusted",
    "revocation_unknown": "revocation_unknown",
}
# A portal's own notice carries no PHI (a link): it goes as any mail, TLS if offered.
PORTAL_NOTICE_DECISION = Decision("tls_opportunistic", "opportunistic", ("portal.notice",), False)
log = get_logger(__name__)

PROTECTOR = audit.Actor("system", "", "carepost protection")
PORTAL_HELD = "held for secure portal pickup"
PORTAL_NOTICE = "portal"  # Message.created_by_type of the portal's notices
MAX_REASONS = 40


@dataclass(frozen=True)
class Protected:
    """What the delivery does with a message after the stage."""

    held: bool  # True: it does not go out now (portal or blocked): the stage recorded it
    data: bytes | None = None  # the protected message to sign, else the built one
    tls: TlsRequirement = "opportunistic"
    mx_patterns: tuple[str, ...] = ()
    decision: Decision | None = None


@dataclass
class ProtectionStage:
    """The stage for one batch of one tenant's messages (made by :meth:`for_batch`)."""

    session: Session
    keys: TenantKeys
    settings: Settings
    now: datetime
    policy: PolicyDocument
    lookup: DomainTlsLookup | None
    key_states: dict[str, RecipientKeys] = field(default_factory=dict)
    scanner: ContentScanner | None = None
    # The organization's S/MIME chain and revocation checks (None: dates and use only).
    smime_trust: TrustChecker | None = None
    _domains: dict[str, DomainTlsFacts] = field(default_factory=dict)
    _decided: dict[uuid.UUID, Decision] = field(default_factory=dict)
    _audits: list[audit.Entry] = field(default_factory=list)
    _events: list[EventRow] = field(default_factory=list)
    _failed: dict[str, list[uuid.UUID]] = field(default_factory=lambda: defaultdict(list))
    _portal: list[uuid.UUID] = field(default_factory=list)
    # The batch's decisions by what they were decided on: the decision is a pure
    # function of it, and a batch's messages mostly share it (one template, a few
    # recipient domains), so each distinct case is decided once.
    _decisions: dict[tuple[Any, ...], Decision] = field(default_factory=dict)

    @classmethod
    def for_batch(
        cls,
        session: Session,
        keys: TenantKeys,
        messages: Sequence[Message],
        *,
        settings: Settings,
        now: datetime,
    ) -> ProtectionStage:
        stage = cls(
            session=session,
            keys=keys,
            settings=settings,
            now=now,
            policy=get_policy(session, keys.tenant_id).document,
            lookup=DomainTlsLookup.from_settings(settings) if settings.mta_sts_enabled else None,
        )
        stage.scanner = ContentScanner(session, keys, stage.policy)
        trust = stage.policy.smime_trust
        stage.smime_trust = checker_for(
            require_chain=trust.require_chain,
            revocation=trust.revocation,
            use_system_store=trust.use_system_store,
            trusted_cas=trust.trusted_cas,
        )
        stage.key_states = recipient_key_states(
            session, keys, [m.to_address for m in messages], now
        )
        return stage

    # --- facts -----------------------------------------------------------------

    def scan(self, message: Message, built: EmailMessage | None = None) -> ScanSummary:
        assert self.scanner is not None  # made by for_batch
        return self.scanner.scan(message, built)

    def sender_settings(self, message: Message) -> SenderSettings:
        senders = self.policy.senders
        chosen = senders.get(message.from_address.strip().lower()) or senders.get("*")
        if chosen is None:
            return SenderSettings()
        return SenderSettings(force_portal=chosen.force_portal, treat_as_phi=chosen.treat_as_phi)

    def domain_facts(self, domain: str) -> DomainTlsFacts:
        if domain not in self._domains:
            self._domains[domain] = domain_tls(
                self.session, domain, now=self.now, lookup=self.lookup
            )
        return self._domains[domain]

    # --- decision ----------------------------------------------------------------

    def message_facts(self, message: Message, built: EmailMessage | None = None) -> MessageFacts:
        return MessageFacts(
            dlp=self.scan(message, built),
            template_phi=message.uses_phi,
            template_id=str(message.template_id) if message.template_id else None,
        )

    def decide(
        self,
        message: Message,
        facts: MessageFacts,
        refused: Mapping[str, KeyState] | None = None,
    ) -> tuple[Decision, DomainTlsFacts]:
        """The decision for one message. ``refused``: end-to-end methods whose key
        failed when used (revoked, untrusted, …), decided again without them."""
        domain = message.to_address.rpartition("@")[2].lower()
        keys = self.key_states.get(address_key(message.to_address), RecipientKeys())
        if refused:
            keys = replace(keys, **dict(refused))
        sender = self.sender_settings(message)

        def decide(tls: DomainTlsFacts) -> Decision:
            case = (domain, _facts_key(facts), keys, tls.tls, sender)
            decision = self._decisions.get(case)
            if decision is None:
                decision = self._decisions[case] = decide_protection(
                    recipient_domain=domain,
                    message=facts,
                    keys=keys,
                    tls=tls.tls,
                    sender=sender,
                    policy=self.policy,
                )
            return decision

        first = decide(NOTHING_KNOWN)
        settled = (
            first.method == "tls_opportunistic"
            or (first.method == "block" and any(r.startswith("dlp.block:") for r in first.reasons))
            or "sender.force_portal" in first.reasons
        )
        if settled:
            return first, NOTHING_KNOWN  # what the domain's TLS is changes nothing
        known = self.domain_facts(domain)
        return decide(known), known

    # --- the stage -----------------------------------------------------------------

    def protect(self, message: Message, built: EmailMessage) -> Protected:
        if message.created_by_type == PORTAL_NOTICE:
            decision, tls = PORTAL_NOTICE_DECISION, NOTHING_KNOWN
        else:
            # Scanned once: a key that fails at use is decided again on the same facts.
            facts = self.message_facts(message, built)
            decision, tls = self.decide(message, facts)
        refused: dict[str, KeyState] = {}
        while decision.method in ("smime", "openpgp"):
            method = decision.method
            try:
                data = protect_message(
                    self.session,
                    self.keys.tenant_id,
                    built,
                    kind=method,
                    recipients=[message.to_address],
                    now=self.now,
                    trust=self.smime_trust,
                )
            except CarepostError as error:
                # Decided again without that key: the recipient's other method, when
                # the policy accepts it, else the policy's fallback (portal for PHI).
                # The reason says why, as a code; never the address or certificate.
                why = getattr(error, "trust_code", "failed")
                log.info("protection.e2e_failed", method=method, error=error.code)
                refused[method] = KEY_FAILURES.get(why, "failed")
                decision, tls = self.decide(message, facts, refused)
            else:
                self._record(message, decision, on_row=False)
                return Protected(False, data, _tls_of(decision), tls.mx_patterns, decision)
        held = decision.method in ("block", "portal")
        # What goes on has its decision written with its outcome (record_results): one
        # UPDATE of the row, not two.
        self._record(message, decision, on_row=held)
        if decision.method == "block":
            blocking = [r for r in decision.reasons if r.startswith(("dlp.block:", "fallback."))]
            reason = "blocked by the protection policy (" + ", ".join(blocking) + ")"
            self._failed[reason[:200]].append(message.id)
            self._events.append((message.id, message.contact_id, "failed", {"protection": "block"}))
            return Protected(True, decision=decision)
        if decision.method == "portal":
            self.hand_to_portal(message, decision.reasons)
            return Protected(True, decision=decision)
        return Protected(False, None, _tls_of(decision), tls.mx_patterns, decision)

    def hand_to_portal(self, message: Message, reasons: Sequence[str]) -> None:
        # Imported here: the portal builds on the outbox (it queues its notices there).
        from carepost.portal.handoff import hand_to_portal

        item_id = hand_to_portal(self.session, message, reasons=reasons, now=self.now)
        self._portal.append(message.id)
        self._events.append(
            (message.id, message.contact_id, "portal", {"portal_item": str(item_id)})
        )

    def _record(self, message: Message, decision: Decision, *, on_row: bool) -> None:
        if on_row:
            self._decided[message.id] = decision
        self._audits.append(
            audit.Entry(
                action="message.protection",
                object_type="message",
                object_id=message.id,
                outcome="failure" if decision.method == "block" else "success",
                details={
                    "method": decision.method,
                    "tls": decision.tls,
                    "phi": decision.phi,
                    "reasons": list(decision.reasons[:MAX_REASONS]),
                },
            )
        )

    def finish(self) -> None:
        """Write what the batch decided: message rows (one UPDATE per distinct
        decision) of the held messages, their states and events, and every decision's
        audit entry."""
        session = self.session
        dialect = dialect_of(session)
        groups: dict[tuple[str, str, tuple[str, ...]], set[uuid.UUID]] = defaultdict(set)
        for message_id, decision in self._decided.items():
            key = (decision.method, decision.tls, decision.reasons[:MAX_REASONS])
            groups[key].add(message_id)
        for (method, tls, reasons), ids in groups.items():
            session.execute(
                update(Message)
                .where(id_in(Message.id, ids, dialect))
                .values(
                    protection_method=method, protection_tls=tls, protection_reasons=list(reasons)
                )
                .execution_options(synchronize_session=False)
            )
        held = {MessageState.DELIVERED: {PORTAL_HELD: self._portal}}
        held[MessageState.FAILED] = dict(self._failed)
        for state, by_reason in held.items():
            for reason, held_ids in by_reason.items():
                if not held_ids:
                    continue
                values: dict[str, Any] = {
                    "state": state,
                    "state_reason": reason,
                    "lease_until": None,
                    "lease_owner": "",
                    "last_event_at": self.now,
                }
                if state == MessageState.DELIVERED:
                    values["sent_at"] = self.now
                session.execute(
                    update(Message)
                    .where(
                        id_in(Message.id, set(held_ids), dialect),
                        Message.state == MessageState.SENDING,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        write_events(session, self.keys.tenant_id, self._events, now=self.now)
        audit.record_many(
            session, tenant_id=self.keys.tenant_id, actor=PROTECTOR, entries=self._audits
        )
        self._decided, self._audits, self._events = {}, [], []
        self._failed, self._portal = defaultdict(list), []


def protection_values(decision: Decision | None) -> dict[str, Any]:
    """The message row's columns for a decision (none for no decision)."""
    if decision is None:
        return {}
    return {
        "protection_method": decision.method,
        "protection_tls": decision.tls,
        "protection_reasons": list(decision.reasons[:MAX_REASONS]),
    }


def _facts_key(facts: MessageFacts) -> tuple[Any, ...]:
    """Everything of ``facts`` the decision reads, as a key (the summary's counts and
    confidences are dicts: sorted items instead)."""
    dlp = facts.dlp
    return (
        tuple(sorted(dlp.counts.items())),
        tuple(sorted(dlp.max_confidence.items())),
        dlp.highest_severity,
        dlp.phi,
        dlp.complete,
        facts.template_phi,
        facts.template_id,
    )


def _tls_of(decision: Decision) -> TlsRequirement:
    if decision.method == "tls_required" and decision.tls in ("verified", "starttls"):
        return "starttls" if decision.tls == "starttls" else "verified"
    if decision.method in ("smime", "openpgp") and decision.tls == "verified":
        return "verified"
    return "opportunistic"
