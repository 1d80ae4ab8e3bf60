"""What the outbox does when a message that requires TLS could not get it
(``tls_unavailable`` from the transport): never send it in the clear.

* PHI, and the policy's ``phi_without_tls`` is ``portal`` (the default): the message
  goes to the portal; the decision is recorded again with ``tls.unavailable`` and
  ``fallback.portal`` and audited.
* PHI with ``phi_without_tls: block``, or a message without PHI that the policy
  sends by TLS only (``non_phi_tls: required``): it waits, like a deferral, for the
  domain's TLS to come back, and bounces when its lifetime is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.crypto.keyring import TenantKeys
from carepost.messages.events import write_events
from carepost.messages.models import Message, MessageState
from carepost.policy.decision import Decision, rules_for
from carepost.policy.service import get_policy
from carepost.protection.domain_tls import note_starttls
from carepost.protection.stage import PORTAL_HELD, PROTECTOR

if TYPE_CHECKING:
    from carepost.messages.delivery import Outgoing
    from carepost.messages.ports import DeliveryReport


def tls_unavailable(
    session: Session,
    keys: TenantKeys,
    message: Message,
    decision: Decision | None,
    detail: dict[str, Any],
    *,
    owner: str,
    now: datetime,
) -> str:
    """``portal`` when the message went to the portal, ``lost`` when the row is no
    longer this worker's, ``deferred`` when the caller is to record a deferral."""
    reasons = list(decision.reasons) if decision is not None else []
    policy = get_policy(session, keys.tenant_id).document
    domain = message.to_address.rpartition("@")[2]
    template = str(message.template_id) if message.template_id else None
    rules, _names = rules_for(policy, domain, template)
    phi = decision is None or decision.phi
    detail["tls_unavailable"] = True
    if not phi or rules.phi_without_tls == "block":
        return "deferred"
    reasons = [*reasons, "tls.unavailable", "fallback.portal"][:40]
    changed = session.execute(
        update(Message)
        .where(
            Message.id == message.id,
            Message.state == MessageState.SENDING,
            Message.lease_owner == owner,
        )
        .values(
            state=MessageState.DELIVERED,
            state_reason=PORTAL_HELD,
            protection_method="portal",
            protection_tls="opportunistic",
            protection_reasons=reasons,
            sent_at=now,
            last_event_at=now,
            lease_until=None,
            lease_owner="",
        )
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        return "lost"
    # Imported here: the portal builds on the outbox (it queues its notices there).
    from carepost.portal.handoff import hand_to_portal

    item_id = hand_to_portal(session, message, reasons=reasons, now=now)
    write_events(
        session,
        keys.tenant_id,
        [(message.id, message.contact_id, "portal", {"portal_item": str(item_id), **detail})],
        now=now,
    )
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=PROTECTOR,
        action="message.protection",
        object_type="message",
        object_id=message.id,
        details={"method": "portal", "tls": "opportunistic", "phi": True, "reasons": reasons},
    )
    return "portal"


def note_tls(session: Session, results: Sequence[tuple[Outgoing, DeliveryReport]]) -> None:
    """Remember the recipient domains whose MX took a delivery over TLS."""
    domains = {
        recipient.rpartition("@")[2]
        for outgoing, report in results
        if report.mx and report.tls
        for recipient in outgoing.envelope.recipients
    }
    if domains:
        note_starttls(session, domains)
