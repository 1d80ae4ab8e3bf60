"""What is known of a recipient domain's TLS, cached per domain in ``domain_tls``.

* MTA-STS (RFC 8461, :mod:`carepost.delivery.mtasts`): the policy is kept for its
  ``max_age``; DNS is asked again after :data:`RECHECK` and the policy fetched again
  only when the TXT ``id`` changed (section 5.1) or the cached one expired. A failed
  fetch or lookup keeps an unexpired cached policy (section 5: an attacker who blocks
  the policy host must not be able to downgrade the domain).
* DANE (RFC 7672, :mod:`carepost.delivery.dane`): usable when the MX answer was
  DNSSEC-validated and every MX host has usable TLSA records. The transport looks the
  records up again and checks the certificate against them at delivery.
* STARTTLS seen: set when a delivery to the domain went over TLS
  (:func:`note_starttls`), for policies that accept it for PHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import dns.exception
import dns.flags
import dns.resolver
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.core.config import Settings
from carepost.core.logging import get_logger
from carepost.delivery import dane, mtasts
from carepost.policy.decision import DomainTls
from carepost.protection.models import DomainTlsRecord

log = get_logger(__name__)

RECHECK = timedelta(hours=1)
MAX_DANE_HOSTS = 5
# Domains marked "STARTTLS seen" by this process: one write each, not one a message.
_STARTTLS_NOTED: set[str] = set()


@dataclass(frozen=True)
class DomainTlsFacts:
    tls: DomainTls
    # The MTA-STS policy's mx patterns when it is in enforce mode (the transport
    # delivers only to matching MX hosts).
    mx_patterns: tuple[str, ...] = ()


NOTHING_KNOWN = DomainTlsFacts(DomainTls())


def facts_of(row: DomainTlsRecord | None, now: datetime) -> DomainTlsFacts:
    if row is None:
        return NOTHING_KNOWN
    current = row.mta_sts_expires_at is not None and row.mta_sts_expires_at > now
    mode = row.mta_sts_mode if current and row.mta_sts_mode in ("enforce", "testing") else "none"
    tls = DomainTls(
        mta_sts=mode,  # type: ignore[arg-type]  # checked just above
        dane_usable=row.dane_usable,
        starttls_seen=row.starttls_seen,
    )
    patterns = tuple(row.mta_sts_mx) if mode == "enforce" else ()
    return DomainTlsFacts(tls, patterns)


@dataclass
class DomainTlsLookup:
    """The DNS and HTTPS side: a resolver and where MTA-STS policies are fetched."""

    resolver: dns.resolver.Resolver
    fetch: mtasts.FetchOptions

    @classmethod
    def from_settings(cls, settings: Settings) -> DomainTlsLookup:
        if settings.dns_nameserver is None:
            resolver = dns.resolver.Resolver()
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [settings.dns_nameserver]
            resolver.port = settings.dns_port
        resolver.lifetime = settings.mta_sts_timeout
        fetch = mtasts.FetchOptions(
            timeout=settings.mta_sts_timeout,
            address=settings.mta_sts_address,
            port=settings.mta_sts_port,
            ca_file=settings.mta_sts_ca_file,
        )
        return cls(resolver, fetch)

    def dane_usable(self, domain: str) -> bool:
        self.resolver.flags = (self.resolver.flags or dns.flags.RD) | dns.flags.AD
        try:
            answer = self.resolver.resolve(domain, "MX", search=False)
        except dns.exception.DNSException:
            return False
        if not answer.response.flags & dns.flags.AD:
            return False
        hosts = [record.exchange.to_text(omit_final_dot=True) for record in answer]
        hosts = [host for host in hosts if host][:MAX_DANE_HOSTS]
        return bool(hosts) and all(dane.lookup_tlsa_sync(self.resolver, host) for host in hosts)


def domain_tls(
    session: Session, domain: str, *, now: datetime, lookup: DomainTlsLookup | None
) -> DomainTlsFacts:
    """The domain's TLS facts, refreshed from DNS (and HTTPS) when due."""
    domain = domain.strip().lower().rstrip(".")
    row = session.get(DomainTlsRecord, domain)
    due = row is None or row.next_check_at is None or row.next_check_at <= now
    if lookup is None or not due:
        return facts_of(row, now)
    fresh = row is None
    if row is None:
        row = DomainTlsRecord(
            domain=domain,
            mta_sts_id="",
            mta_sts_mode="none",
            mta_sts_mx=[],
            mta_sts_max_age=0,
            dane_usable=False,
            starttls_seen=False,
        )
    _refresh(row, lookup, now)
    try:
        with session.begin_nested():
            if fresh:
                session.add(row)
            session.flush()
    except IntegrityError:
        # Another worker cached the domain at the same moment: its row stands.
        return facts_of(session.get(DomainTlsRecord, domain), now)
    return facts_of(row, now)


def _refresh(row: DomainTlsRecord, lookup: DomainTlsLookup, now: datetime) -> None:
    cached = row.mta_sts_expires_at is not None and row.mta_sts_expires_at > now
    policy_id, policy = mtasts.discover(
        lookup.resolver, row.domain, lookup.fetch, known_id=row.mta_sts_id if cached else None
    )
    if policy is not None and policy_id is not None:
        row.mta_sts_id = policy_id
        row.mta_sts_mode = policy.mode
        row.mta_sts_mx = list(policy.mx)
        row.mta_sts_max_age = policy.max_age
        row.mta_sts_expires_at = now + timedelta(seconds=policy.max_age)
    elif not cached:
        row.mta_sts_mode, row.mta_sts_mx, row.mta_sts_expires_at = "none", [], None
    row.dane_usable = lookup.dane_usable(row.domain)
    row.checked_at = now
    row.next_check_at = now + RECHECK
    log.info(
        "protection.domain_tls",
        domain=row.domain,
        mta_sts=facts_of(row, now).tls.mta_sts,
        dane=row.dane_usable,
    )


def note_starttls(session: Session, domains: set[str]) -> None:
    """Remember that deliveries to ``domains`` went over TLS (one write per domain
    and process). A domain not cached yet gets a row that its first lookup fills."""
    new = {d.lower() for d in domains} - _STARTTLS_NOTED
    if not new:
        return
    known = set(
        session.scalars(select(DomainTlsRecord.domain).where(DomainTlsRecord.domain.in_(new)))
    )
    if known:
        session.execute(
            update(DomainTlsRecord)
            .where(DomainTlsRecord.domain.in_(known), DomainTlsRecord.starttls_seen.is_(False))
            .values(starttls_seen=True)
            .execution_options(synchronize_session=False)
        )
    for domain in sorted(new - known):
        try:
            with session.begin_nested():
                session.add(
                    DomainTlsRecord(
                        domain=domain,
                        mta_sts_id="",
                        mta_sts_mode="none",
                        mta_sts_mx=[],
                        mta_sts_max_age=0,
                        dane_usable=False,
                        starttls_seen=True,
                    )
                )
                session.flush()
        except IntegrityError:
            continue
    _STARTTLS_NOTED.update(new)
