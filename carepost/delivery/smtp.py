"""The SMTP transport: delivers an envelope through a smarthost or straight to the
recipient domain's MX hosts (RFC 5321 section 5), within per-domain limits.

For each envelope (all recipients of one domain) the transport

1. waits for a place among the domain's concurrent deliveries
   (``smtp_domain_concurrency``) and for a token of its rate limit
   (``smtp_domain_rate`` messages per second, a token bucket);
2. finds the destinations: the smarthost, or the MX hosts in preference order with
   their addresses (:mod:`carepost.delivery.mx`), at most :data:`MAX_DESTINATIONS`;
3. takes an open connection to the first destination from its pool, or opens one, and
   runs the transaction (:mod:`carepost.delivery.smtp_session`). A destination that
   cannot be reached, refuses the session, or breaks off before the message content
   was sent makes the transport try the next one. A pooled connection that turns out
   to be closed is replaced by a fresh one to the same destination first.

Whatever goes wrong on the network ends as ``deferred`` outcomes, never an exception.
Once the content may have reached a server (a connection dropped after the final dot,
before the reply) the message is not offered to another destination: the outbox
retries it later, and the receiver may then see it twice. That window is SMTP's own
(RFC 1047).

An envelope may require TLS (``Envelope.tls``, set by the protection policy,
:mod:`carepost.protection`): ``starttls`` is STARTTLS at TLS 1.2 or later without
checking the certificate; ``verified`` is the same with the certificate verified, by
the MX host's usable DANE TLSA records (:mod:`carepost.delivery.dane`, looked up per
host) or else by PKIX against the MX host name, and only to MX hosts the domain's
MTA-STS policy names (``Envelope.mx_patterns``). Such an envelope never falls back to
plaintext: when no destination gives the TLS it needs the outcome is
``tls_unavailable`` and the outbox falls back as the policy says. Through a smarthost
the requirement applies to the smarthost hop, which must then use verified TLS
(``smarthost_tls`` starttls or implicit): the smarthost enforces the rest.

A transport belongs to one event loop (its limits are asyncio primitives).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import dns.asyncresolver

from carepost.core.config import Settings
from carepost.core.logging import get_logger
from carepost.delivery import dane
from carepost.delivery.mtasts import mx_allowed
from carepost.delivery.mx import MxLookupError, make_resolver, resolve_mx
from carepost.delivery.smtp_session import (
    ConnectionPool,
    Destination,
    SessionFailure,
    SessionOptions,
    TlsMode,
    send_transaction,
    tls_context_for,
)
from carepost.delivery.transport import DeliveryReport, Envelope, RecipientOutcome

log = get_logger(__name__)

# Like Postfix's smtp_mx_address_limit: past five addresses, later is better than slower.
MAX_DESTINATIONS = 5
# A smarthost is always verified: it is a fixed, known host with a real certificate.
SMARTHOST_TLS: dict[str, TlsMode] = {"starttls": "verify", "implicit": "implicit", "none": "none"}


class TokenBucket:
    """At most ``rate`` takes per second on average, ``rate`` (at least one) at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        """True when forgetting this bucket changes nothing (it would refill by now)."""
        return self.rate <= 0 or self.tokens + (now - self.updated) * self.rate >= self.capacity


@dataclass
class DomainLimits:
    concurrency: asyncio.Semaphore
    rate: TokenBucket
    users: int = 0  # deliveries running or waiting: the limits are kept while any is


@dataclass
class Routing:
    """Where mail goes: the smarthost, or each domain's MX hosts through ``resolver``."""

    smarthost: Destination | None = None
    resolver: dns.asyncresolver.Resolver | None = None
    mx_port: int = 25
    allow_non_global: bool = False

    async def destinations(self, domain: str) -> list[Destination]:
        """Raises :class:`MxLookupError` when the domain has nowhere to deliver to."""
        if self.smarthost is not None:
            return [self.smarthost]
        assert self.resolver is not None
        hosts = await resolve_mx(domain, self.resolver, allow_non_global=self.allow_non_global)
        found = [
            Destination(name=host.name, address=address, port=self.mx_port)
            for host in hosts
            for address in host.addresses
        ]
        return found[:MAX_DESTINATIONS]


@dataclass
class SmtpTransport:
    """A :class:`carepost.delivery.transport.Transport` over SMTP."""

    routing: Routing
    options: SessionOptions
    domain_concurrency: int = 10
    domain_rate: float = 0.0
    # The CA bundle verified TLS checks against (system CAs when None): the
    # smarthost's, or the one for MX hosts.
    ca_file: str | None = None
    _limits: dict[str, DomainLimits] = field(default_factory=dict)
    _pools: dict[Destination, ConnectionPool] = field(default_factory=dict)
    # Pools of envelopes that require TLS, per destination and TLS variant.
    _required_pools: dict[tuple[Destination, str], ConnectionPool] = field(default_factory=dict)
    _required_options: dict[str, SessionOptions] = field(default_factory=dict)
    _swept_at: float = field(default_factory=time.monotonic)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        helo_name = settings.smtp_helo_name or socket.getfqdn()
        password = settings.smarthost_password
        if settings.smtp_mode == "smarthost":
            assert settings.smarthost_host is not None  # checked by Settings
            tls: TlsMode = SMARTHOST_TLS[settings.smarthost_tls]
            ca_file = settings.smarthost_ca_file
            host = settings.smarthost_host
            routing = Routing(smarthost=Destination(host, host, settings.smarthost_port))
            username = settings.smarthost_username
        else:
            tls = settings.tls_policy
            ca_file = settings.tls_ca_file
            resolver = make_resolver(
                settings.dns_nameserver, settings.dns_port, timeout=settings.smtp_connect_timeout
            )
            routing = Routing(
                resolver=resolver,
                mx_port=settings.mx_port,
                allow_non_global=settings.mx_allow_non_global,
            )
            username = None
        options = SessionOptions(
            helo_name=helo_name,
            connect_timeout=settings.smtp_connect_timeout,
            command_timeout=settings.smtp_command_timeout,
            data_timeout=settings.smtp_data_timeout,
            tls=tls,
            tls_context=tls_context_for(tls, str(ca_file) if ca_file else None),
            username=username,
            password=password.get_secret_value() if password and username else None,
            max_messages=settings.smtp_connection_max_messages,
            idle_seconds=settings.smtp_connection_idle_seconds,
        )
        return cls(
            routing=routing,
            options=options,
            domain_concurrency=settings.smtp_domain_concurrency,
            domain_rate=settings.smtp_domain_rate,
            ca_file=str(ca_file) if ca_file else None,
        )

    def _domain_limits(self, domain: str) -> DomainLimits:
        limits = self._limits.get(domain)
        if limits is None:
            limits = DomainLimits(
                asyncio.Semaphore(self.domain_concurrency), TokenBucket(self.domain_rate)
            )
            self._limits[domain] = limits
        return limits

    def _pool(self, destination: Destination) -> ConnectionPool:
        pool = self._pools.get(destination)
        if pool is None:
            pool = self._pools[destination] = ConnectionPool(destination, self.options)
        return pool

    async def deliver(self, envelope: Envelope) -> DeliveryReport:
        if not envelope.recipients:
            return DeliveryReport(outcomes=(), host=None, tls=False)
        self._sweep()
        domain = envelope.recipients[0].rpartition("@")[2].lower()
        limits = self._domain_limits(domain)
        limits.users += 1
        try:
            async with limits.concurrency:
                await limits.rate.take()
                try:
                    destinations = await self.routing.destinations(domain)
                except MxLookupError as error:
                    outcomes = tuple(
                        RecipientOutcome(r, error.outcome, None, error.enhanced, error.detail)
                        for r in envelope.recipients
                    )
                    return DeliveryReport(outcomes=outcomes, host=None, tls=False)
                if envelope.tls != "opportunistic":
                    return await self._deliver_required(destinations, envelope)
                return await self._deliver_to(destinations, envelope, self._pool)
        finally:
            limits.users -= 1

    async def _deliver_required(
        self, destinations: list[Destination], envelope: Envelope
    ) -> DeliveryReport:
        """Deliver an envelope that requires TLS, with a pool per TLS variant."""
        variants: dict[Destination, str] = {}
        if self.routing.smarthost is not None:
            if self.options.tls not in ("verify", "implicit"):
                return self._unavailable(envelope, "the smarthost is not reached over verified TLS")
            self._ensure_smarthost_variant()
            variants = {d: "smarthost" for d in destinations}
        else:
            if envelope.mx_patterns:
                destinations = [d for d in destinations if mx_allowed(envelope.mx_patterns, d.name)]
                if not destinations:
                    return self._unavailable(envelope, "no MX host matches the MTA-STS policy")
            records: dict[str, tuple[dane.Tlsa, ...]] = {}
            if envelope.tls == "verified" and self.routing.resolver is not None:
                for name in {d.name for d in destinations}:
                    records[name] = await dane.lookup_tlsa(self.routing.resolver, name)
            for destination in destinations:
                tlsa = records.get(destination.name, ())
                variants[destination] = self._variant(envelope.tls, tlsa)

        def pool_for(destination: Destination) -> ConnectionPool:
            key = (destination, variants[destination])
            pool = self._required_pools.get(key)
            if pool is None:
                options = self._required_options[variants[destination]]
                pool = self._required_pools[key] = ConnectionPool(destination, options)
            return pool

        return await self._deliver_to(destinations, envelope, pool_for, required=True)

    def _variant(self, requirement: str, tlsa: tuple[dane.Tlsa, ...]) -> str:
        """The name of the session options for a requirement (made once each)."""
        if tlsa:
            digest = hashlib.sha256(repr(sorted(tlsa, key=repr)).encode()).hexdigest()[:16]
            key = f"dane:{digest}"
            mode: TlsMode = "encrypt"
        elif requirement == "verified":
            key, mode = "verified", "verify"
        else:
            key, mode = "starttls", "encrypt"
        if key not in self._required_options:
            self._required_options[key] = replace(
                self.options, tls=mode, tls_context=self._required_context(mode), tlsa=tlsa
            )
        return key

    def _required_context(self, mode: TlsMode) -> ssl.SSLContext:
        context = tls_context_for(mode, self.ca_file)
        assert context is not None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _ensure_smarthost_variant(self) -> None:
        if "smarthost" not in self._required_options:
            self._required_options["smarthost"] = replace(
                self.options, tls_context=self._required_context(self.options.tls)
            )

    @staticmethod
    def _unavailable(envelope: Envelope, text: str) -> DeliveryReport:
        outcomes = tuple(
            RecipientOutcome(r, "tls_unavailable", None, "4.7.5", text) for r in envelope.recipients
        )
        return DeliveryReport(outcomes=outcomes, host=None, tls=False)

    def _sweep(self) -> None:
        """Now and then, close idle connections past their time and forget the pools
        and limits of destinations and domains no longer in use (a long-running worker
        meets many domains)."""
        now = time.monotonic()
        if now - self._swept_at < self.options.idle_seconds:
            return
        self._swept_at = now
        for destination, pool in list(self._pools.items()):
            if pool.sweep(now):
                del self._pools[destination]
        for key, pool in list(self._required_pools.items()):
            if pool.sweep(now):
                del self._required_pools[key]
        for domain, limits in list(self._limits.items()):
            if limits.users == 0 and limits.rate.full(now):
                del self._limits[domain]

    async def _deliver_to(
        self,
        destinations: list[Destination],
        envelope: Envelope,
        pool_for: Callable[[Destination], ConnectionPool],
        *,
        required: bool = False,
    ) -> DeliveryReport:
        failure = SessionFailure("no destination to deliver to")
        last_host: str | None = None
        tls_failure: SessionFailure | None = None
        for destination in destinations:
            pool = pool_for(destination)
            last_host = destination.name
            fresh = False
            while True:
                try:
                    connection = await pool.acquire(fresh=fresh)
                except SessionFailure as error:
                    failure = error
                    if error.tls_failed:
                        tls_failure = error
                    # The reply text stays out of logs: servers quote addresses in it.
                    log.info(
                        "delivery.smtp.connect_failed",
                        host=destination.name,
                        smtp_status=error.reply_code,
                    )
                    break  # the next destination
                try:
                    outcomes = await send_transaction(connection, envelope)
                except asyncio.CancelledError:
                    pool.discard(connection)  # mid-transaction: in no known state
                    raise
                except SessionFailure as error:
                    pool.discard(connection)
                    if error.data_sent:
                        return self._report(envelope, error, destination.name, connection.tls)
                    if connection.reused and not fresh:
                        fresh = True  # the server closed the pooled connection: once more
                        continue
                    failure = error
                    break
                await pool.release(connection)
                return DeliveryReport(
                    outcomes=tuple(outcomes),
                    host=destination.name,
                    tls=connection.tls,
                    mx=self.routing.smarthost is None,
                )
        if required and tls_failure is not None:
            # Some destination could not give the TLS required: never in the clear.
            return self._unavailable(envelope, tls_failure.text)
        return self._report(envelope, failure, last_host, False)

    @staticmethod
    def _report(
        envelope: Envelope, failure: SessionFailure, host: str | None, tls: bool
    ) -> DeliveryReport:
        outcomes = tuple(failure.outcome_for(r) for r in envelope.recipients)
        return DeliveryReport(outcomes=outcomes, host=host, tls=tls)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        pools += list(self._required_pools.values())
        self._required_pools = {}
        await asyncio.gather(*(pool.aclose() for pool in pools))
