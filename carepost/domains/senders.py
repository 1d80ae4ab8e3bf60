"""Who a tenant may send as: the From address must be on a verified sending domain.

A tenant proves it controls a domain by publishing the records carepost shows for it
(SPF, the DKIM keys, DMARC) and passing a DNS check (``service.check_dns``). The From
address's domain is accepted when it, or a parent of it, is one of the tenant's
sending domains in state ``verified`` or ``failing``: relaxed DMARC alignment
(RFC 7489 section 3.1.1) lets ``news.clinic.example`` send under ``clinic.example``'s
keys, and a domain that passed once and fails a later check (someone changed DNS) has
still been proven the tenant's; the domains page and the check say what to fix, and a
DNS hiccup does not stop patients' mail. A ``pending`` domain (never passed) or an
unknown one is refused, so nobody sends as a domain they have not shown to be theirs.

A development machine has no DNS to publish in: the setting
``sender_unverified_tenants`` (tenant slugs, empty by default) lets the tenants it
names send from any address. It is an operator's choice in the configuration, never a
tenant's own. The ``carepost demo`` organization needs no exemption: the command gives
it the sending domain ``demo.example`` (reserved, RFC 2606), marked verified.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.core.config import get_settings
from carepost.core.errors import ValidationFailed
from carepost.domains.models import SendingDomain
from carepost.domains.service import SENDERS_CACHE, normalize_domain
from carepost.tenancy.models import Tenant

PROVEN_STATES = ("verified", "failing")
_CACHE_KEY = SENDERS_CACHE


def _parents(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _tenant_facts(
    session: Session, tenant_id: uuid.UUID, exempt: Iterable[str] | None
) -> tuple[bool, dict[str, str]]:
    """Whether the tenant is exempt, and its domains' states: read once per session (a
    batch of 10,000 messages asks once, not 10,000 times)."""
    cache: dict[uuid.UUID, tuple[bool, dict[str, str]]] = session.info.setdefault(_CACHE_KEY, {})
    if tenant_id not in cache:
        slugs = tuple(get_settings().sender_unverified_tenants if exempt is None else exempt)
        slug = session.scalar(select(Tenant.slug).where(Tenant.id == tenant_id)) if slugs else None
        rows = session.execute(
            select(SendingDomain.name, SendingDomain.state).where(
                SendingDomain.tenant_id == tenant_id
            )
        ).all()
        states = {str(name): str(state) for name, state in rows}
        cache[tenant_id] = (slug is not None and slug in slugs, states)
    return cache[tenant_id]


def forget(session: Session) -> None:
    """Drop what this session read (after a domain changed within it)."""
    session.info.pop(_CACHE_KEY, None)


def check_sender(
    session: Session,
    tenant_id: uuid.UUID,
    from_address: str,
    *,
    exempt: Iterable[str] | None = None,
) -> str | None:
    """Why the tenant may not send from this address (a sentence for the ``from`` field
    of a problem+json), or None when it may. ``exempt`` overrides the setting
    ``sender_unverified_tenants`` (tests)."""
    allowed, states = _tenant_facts(session, tenant_id, exempt)
    if allowed:
        return None
    _, _, raw_domain = from_address.rpartition("@")
    try:
        domain = normalize_domain(raw_domain)
    except ValidationFailed:
        return "the From address has no valid domain"
    found = [(name, states[name]) for name in _parents(domain) if name in states]
    if any(state in PROVEN_STATES for _, state in found):
        return None
    if found:
        name = found[0][0]
        return (
            f"the sending domain {name} is not verified yet: publish its DNS records"
            " and run its DNS check (Domains & DKIM) before sending from it"
        )
    return (
        f"{domain} is not a sending domain of this organization: add it under"
        " Domains & DKIM, publish its DNS records and pass the DNS check"
    )
