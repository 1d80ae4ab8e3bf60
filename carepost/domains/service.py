"""Sending domains: add, list, check and delete them; generate, rotate and promote
their DKIM keys; hand the outbox the keys to sign with.

Adding a domain generates an RSA-2048 and an Ed25519 key, both ``active``: mail
from the domain is signed at once (dual-signed, RFC 8463), and until the admin
publishes the records receivers see a signature without a key, which is no worse
than none. Rotation adds a ``next`` key per algorithm under a new selector; it
is promoted (and the old key retired, its private half destroyed) when the admin
confirms the record is published, or by the worker after
``domains_key_promotion_hours``.

Audit: ``domain.create``/``domain.delete``, ``dkim_key.create`` (selector,
algorithm, state), ``dkim_key.rotate``, ``dkim_key.promote``. Never a private key.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

import dns.resolver
import idna
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from carepost.audit import service as audit
from carepost.core.config import Settings
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.delivery.dkim import ALGORITHMS, Algorithm, DkimSigner
from carepost.domains.checks import DomainCheck, check_domain, make_resolver
from carepost.domains.keys import generate_key
from carepost.domains.models import DkimKey, SendingDomain
from carepost.domains.records import DnsRecord, KeyInfo, SenderPolicy, records_to_publish

MAX_DOMAINS = 100
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
SELECTOR_PREFIX = {"rsa-sha256": "rsa", "ed25519-sha256": "ed"}
STATES = ("next", "active", "retired")
# What carepost.domains.senders keeps per session; dropped whenever a domain changes.
SENDERS_CACHE = "carepost.domains.senders"


def normalize_domain(name: str) -> str:
    """The domain in lower-case IDNA form, or ValidationFailed saying what is wrong."""
    text = name.strip().rstrip(".").lower()
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii") if text else ""
    except idna.IDNAError:
        raise ValidationFailed("not a valid domain name", field="name") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(LABEL.match(x) for x in labels):
        raise ValidationFailed("not a valid domain name (like mail.example.org)", field="name")
    if labels[-1].isdigit():
        raise ValidationFailed("an IP address is not a domain name", field="name")
    return ascii_name


def sender_policy(settings: Settings) -> SenderPolicy:
    return SenderPolicy(
        spf_include=settings.domains_spf_include,
        spf_addresses=tuple(settings.domains_spf_addresses),
        dmarc_report_address=settings.domains_dmarc_report_address,
    )


def resolver_for(settings: Settings) -> dns.resolver.Resolver:
    return make_resolver(settings.domains_dns_nameservers, timeout=settings.domains_dns_timeout)


# --- domains ------------------------------------------------------------------------


def list_domains(session: Session, tenant_id: uuid.UUID) -> list[SendingDomain]:
    query = select(SendingDomain).where(SendingDomain.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(SendingDomain.name)))


def get_domain(session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID) -> SendingDomain:
    row = session.get(SendingDomain, domain_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("no such sending domain")
    return row


def domain_keys(session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID) -> list[KeyInfo]:
    """The public side of a domain's keys (no private key is loaded or decrypted)."""
    rows = session.execute(
        select(DkimKey.selector, DkimKey.algorithm, DkimKey.public_key, DkimKey.state)
        .where(DkimKey.tenant_id == tenant_id, DkimKey.domain_id == domain_id)
        .order_by(DkimKey.created_at, DkimKey.algorithm)
    )
    return [KeyInfo(r.selector, r.algorithm, r.public_key, r.state) for r in rows]


def key_rows(session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID) -> list[DkimKey]:
    """The key rows without their private halves (for listing: dates and states)."""
    query = (
        select(DkimKey)
        .options(
            load_only(
                DkimKey.selector,
                DkimKey.algorithm,
                DkimKey.public_key,
                DkimKey.state,
                DkimKey.created_at,
                DkimKey.activated_at,
                DkimKey.retired_at,
            )
        )
        .where(DkimKey.tenant_id == tenant_id, DkimKey.domain_id == domain_id)
        .order_by(DkimKey.created_at, DkimKey.algorithm)
    )
    return list(session.scalars(query))


def records_for(session: Session, domain: SendingDomain, settings: Settings) -> list[DnsRecord]:
    keys = domain_keys(session, domain.tenant_id, domain.id)
    return records_to_publish(domain.name, keys, sender_policy(settings))


def _new_selector(session: Session, domain_id: uuid.UUID, algorithm: str) -> str:
    """``cp-<rsa|ed>-<yyyymmdd>-<4 hex>``: says what and when, and never repeats."""
    stamp = utcnow().strftime("%Y%m%d")
    while True:
        selector = f"cp-{SELECTOR_PREFIX[algorithm]}-{stamp}-{secrets.token_hex(2)}"
        taken = session.scalar(
            select(DkimKey.id).where(DkimKey.domain_id == domain_id, DkimKey.selector == selector)
        )
        if taken is None:
            return selector


def _add_key(
    session: Session, domain: SendingDomain, algorithm: Algorithm, state: str, actor: audit.Actor
) -> DkimKey:
    pair = generate_key(algorithm)
    now = utcnow()
    row = DkimKey(
        id=new_id(),
        tenant_id=domain.tenant_id,
        domain_id=domain.id,
        selector=_new_selector(session, domain.id, algorithm),
        algorithm=algorithm,
        public_key=pair.public_key,
        private_key=pair.private_key_pem.decode("ascii"),
        state=state,
        activated_at=now if state == "active" else None,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        tenant_id=domain.tenant_id,
        actor=actor,
        action="dkim_key.create",
        object_type="dkim_key",
        object_id=row.id,
        details={
            "domain": domain.name,
            "selector": row.selector,
            "algorithm": algorithm,
            "state": state,
        },
    )
    return row


def add_domain(
    session: Session, tenant_id: uuid.UUID, *, name: str, actor: audit.Actor
) -> SendingDomain:
    """Add a sending domain with an active RSA-2048 and an active Ed25519 key."""
    clean = normalize_domain(name)
    count = session.scalar(
        select(func.count()).select_from(SendingDomain).where(SendingDomain.tenant_id == tenant_id)
    )
    if (count or 0) >= MAX_DOMAINS:
        raise Conflict(f"an organization has at most {MAX_DOMAINS} sending domains")
    domain = SendingDomain(
        id=new_id(),
        tenant_id=tenant_id,
        name=clean,
        state="pending",
        created_by_type=actor.type,
        created_by_id=actor.id,
        created_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(domain)
            session.flush()
    except IntegrityError:
        raise Conflict("this domain is already added", field="name") from None
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="domain.create",
        object_type="sending_domain",
        object_id=domain.id,
        details={"domain": clean},
    )
    for algorithm in ALGORITHMS:
        _add_key(session, domain, algorithm, "active", actor)
    session.info.pop(SENDERS_CACHE, None)
    return domain


def delete_domain(
    session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    domain = get_domain(session, tenant_id, domain_id)
    name = domain.name
    # Core deletes: the ORM would load (and decrypt) every private key first.
    session.execute(delete(DkimKey).where(DkimKey.domain_id == domain.id))
    session.delete(domain)
    session.flush()
    session.info.pop(SENDERS_CACHE, None)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="domain.delete",
        object_type="sending_domain",
        object_id=domain_id,
        details={"domain": name},
    )


# --- rotation -----------------------------------------------------------------------


def rotate_keys(
    session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID, *, actor: audit.Actor
) -> list[DkimKey]:
    """Add a ``next`` key per algorithm under new selectors (to publish before promotion)."""
    domain = get_domain(session, tenant_id, domain_id)
    waiting = session.scalar(
        select(func.count())
        .select_from(DkimKey)
        .where(DkimKey.domain_id == domain.id, DkimKey.state == "next")
    )
    if waiting:
        raise Conflict(
            "a rotation is already waiting: publish its records and promote the next keys first"
        )
    created = [_add_key(session, domain, algorithm, "next", actor) for algorithm in ALGORITHMS]
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="dkim_key.rotate",
        object_type="sending_domain",
        object_id=domain.id,
        details={"domain": domain.name, "next_selectors": [k.selector for k in created]},
    )
    return created


def _promote(session: Session, domain: SendingDomain, actor: audit.Actor, reason: str) -> int:
    """Make the domain's next keys active and retire (and wipe) the ones they replace."""
    now = utcnow()
    promoted = session.execute(
        select(DkimKey.id, DkimKey.algorithm, DkimKey.selector).where(
            DkimKey.domain_id == domain.id, DkimKey.state == "next"
        )
    ).all()
    for key_id, algorithm, selector in promoted:
        # The private half of a retired key is destroyed: it never signs again.
        session.execute(
            update(DkimKey)
            .where(
                DkimKey.domain_id == domain.id,
                DkimKey.algorithm == algorithm,
                DkimKey.state == "active",
            )
            .values(state="retired", retired_at=now, private_key=None)
        )
        session.execute(
            update(DkimKey).where(DkimKey.id == key_id).values(state="active", activated_at=now)
        )
        audit.record(
            session,
            tenant_id=domain.tenant_id,
            actor=actor,
            action="dkim_key.promote",
            object_type="dkim_key",
            object_id=key_id,
            reason=reason,
            details={"domain": domain.name, "selector": selector, "algorithm": algorithm},
        )
    return len(promoted)


def promote_next_keys(
    session: Session, tenant_id: uuid.UUID, domain_id: uuid.UUID, *, actor: audit.Actor
) -> int:
    """The admin confirms the next keys are published: they sign from now on."""
    domain = get_domain(session, tenant_id, domain_id)
    count = _promote(session, domain, actor, "confirmed by an administrator")
    if not count:
        raise Conflict("there are no next keys to promote: rotate first")
    return count


def promote_due_keys(session: Session, *, now: datetime, delay: timedelta) -> int:
    """Promote next keys of every tenant created more than ``delay`` ago (worker job)."""
    due = session.scalars(
        select(SendingDomain)
        .where(
            SendingDomain.id.in_(
                select(DkimKey.domain_id).where(
                    DkimKey.state == "next", DkimKey.created_at <= now - delay
                )
            )
        )
        .order_by(SendingDomain.id)
    ).all()
    return sum(_promote(session, domain, audit.SYSTEM, "rotation delay elapsed") for domain in due)


# --- DNS check ----------------------------------------------------------------------


def check_dns(
    session: Session,
    tenant_id: uuid.UUID,
    domain_id: uuid.UUID,
    *,
    settings: Settings,
    resolver: dns.resolver.Resolver | None = None,
) -> DomainCheck:
    """Check the domain's SPF, DKIM and DMARC records now; keep the result and the state."""
    domain = get_domain(session, tenant_id, domain_id)
    keys = domain_keys(session, tenant_id, domain.id)
    result = check_domain(
        resolver or resolver_for(settings), domain.name, keys, sender_policy(settings)
    )
    domain.last_check = result.as_json()
    domain.last_checked_at = utcnow()
    if result.passed:
        domain.state = "verified"
    elif domain.state == "verified":
        domain.state = "failing"
    session.flush()
    session.info.pop(SENDERS_CACHE, None)  # senders.check_sender reads the states
    return result


# --- signing (the outbox) -----------------------------------------------------------


def _candidates(from_domain: str) -> list[str]:
    """The From domain and its parents: a key of ``clinic.example`` aligns with mail
    from ``news.clinic.example`` under relaxed DKIM alignment (RFC 7489 section 3.1.1)."""
    labels = normalize_domain(from_domain).split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def signing_keys_for(session: Session, keys: TenantKeys, from_domain: str) -> list[DkimSigner]:
    """The active keys (RSA and Ed25519), decrypted, of the tenant's domain closest to
    ``from_domain``; [] when the tenant has no such domain (the mail goes unsigned)."""
    try:
        candidates = _candidates(from_domain)
    except ValidationFailed:
        return []
    domains = {
        row.name: row.id
        for row in session.execute(
            select(SendingDomain.name, SendingDomain.id).where(
                SendingDomain.tenant_id == keys.tenant_id, SendingDomain.name.in_(candidates)
            )
        )
    }
    name = next((c for c in candidates if c in domains), None)
    if name is None:
        return []
    with bind_tenant_keys(keys):
        rows = session.scalars(
            select(DkimKey)
            .where(
                DkimKey.tenant_id == keys.tenant_id,
                DkimKey.domain_id == domains[name],
                DkimKey.state == "active",
            )
            .order_by(DkimKey.algorithm.desc())  # RSA first: the one every receiver knows
        ).all()
        return [
            DkimSigner(name, row.selector, row.algorithm, row.private_key.encode("ascii"))  # type: ignore[arg-type]
            for row in rows
            if row.private_key
        ]


def summaries(
    session: Session, tenant_id: uuid.UUID, domains: Iterable[SendingDomain]
) -> dict[uuid.UUID, dict[str, int]]:
    """Per domain, how many keys it has in each state (for lists)."""
    ids = [d.id for d in domains]
    counts: dict[uuid.UUID, dict[str, int]] = {i: dict.fromkeys(STATES, 0) for i in ids}
    rows = session.execute(
        select(DkimKey.domain_id, DkimKey.state, func.count())
        .where(DkimKey.tenant_id == tenant_id, DkimKey.domain_id.in_(ids))
        .group_by(DkimKey.domain_id, DkimKey.state)
    )
    for domain_id, state, count in rows:
        counts[domain_id][state] = count
    return counts
