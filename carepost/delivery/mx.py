"""Where a domain's mail goes: MX lookups with dnspython (RFC 5321 section 5.1).

The receiving hosts of a domain are its MX records in preference order (equal
preferences shuffled, as section 5.1 asks, to spread load), each resolved to its
A and AAAA addresses. A domain without MX records receives mail at its own address
records (the "implicit MX"). A null MX (RFC 7505: one MX of preference 0 and exchange
".") means the domain accepts no mail: the message bounces at once. A domain that does
not exist bounces too; a lookup that fails for any other reason (timeout, SERVFAIL)
defers, because DNS trouble is usually temporary.

Only hosts with globally routable addresses are delivered to: an MX that resolves to a
loopback, private (RFC 1918, ULA), link-local, CGNAT, multicast, reserved or otherwise
non-global address is skipped, and a domain left with no such host bounces. Otherwise
anyone who controls a recipient domain's DNS could make the worker open SMTP sessions
to the machines around it (an SSRF through DNS). Test rigs and labs that receive on
loopback set ``mx_allow_non_global``.

The resolver is injectable (settings ``dns_nameserver`` and ``dns_port``) so tests point
it at a real DNS server on loopback; answers are cached for their TTL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from carepost.core.errors import CarepostError
from carepost.delivery.transport import OutcomeStatus

CACHE_SIZE = 10_000


@dataclass(frozen=True)
class MxHost:
    """One receiving host of a domain, with the addresses to try in order."""

    name: str
    preference: int
    addresses: tuple[str, ...]


class MxLookupError(CarepostError):
    """The receiving hosts of a domain could not be found."""

    code = "mx-lookup-failed"
    status = 502
    title = "Mail exchanger lookup failed"

    def __init__(self, detail: str, *, outcome: OutcomeStatus, enhanced: str) -> None:
        super().__init__(detail)
        self.outcome: OutcomeStatus = outcome
        self.enhanced = enhanced


def make_resolver(
    nameserver: str | None, port: int = 53, *, timeout: float = 10.0
) -> dns.asyncresolver.Resolver:
    """A caching resolver: the system's (/etc/resolv.conf) or the one nameserver given."""
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
    return resolver


def _deferred(domain: str, problem: str) -> MxLookupError:
    return MxLookupError(
        f"DNS lookup for {domain} failed ({problem}); will retry",
        outcome="deferred",
        enhanced="4.4.3",
    )


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> tuple[str, ...]:
    """The IPv4 then IPv6 addresses of a host name; empty when it has none."""
    found: list[str] = []
    answers = await asyncio.gather(
        *(_records(resolver, name, kind) for kind in ("A", "AAAA")), return_exceptions=True
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            if isinstance(answer, dns.exception.DNSException):
                continue  # this family is missing or failing; the other may do
            raise answer
        found.extend(answer)
    return tuple(found)


async def _records(resolver: dns.asyncresolver.Resolver, name: str, kind: str) -> list[str]:
    try:
        answer = await resolver.resolve(name, kind, search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    return [record.to_text() for record in answer]


def is_global_address(address: str) -> bool:
    """Whether mail may be sent to this address: globally routable and unicast.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as the IPv4 address it
    carries, since that is where a connection to it goes."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _refused(domain: str) -> MxLookupError:
    return MxLookupError(
        f"domain {domain} has mail exchangers only at non-global addresses"
        " (loopback, private, link-local or reserved); refused",
        outcome="bounced",
        enhanced="5.4.4",
    )


async def resolve_mx(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    rng: random.Random | None = None,
    allow_non_global: bool = False,
) -> list[MxHost]:
    """The hosts to try for ``domain``, best first; raises :class:`MxLookupError` with
    the outcome (bounced or deferred) when there are none. Addresses that are not
    globally routable are dropped unless ``allow_non_global`` (tests, labs)."""
    chooser = rng or random.Random()

    def usable(addresses: tuple[str, ...]) -> tuple[str, ...]:
        if allow_non_global:
            return addresses
        return tuple(address for address in addresses if is_global_address(address))

    try:
        answer = await resolver.resolve(domain, "MX", search=False)
    except dns.resolver.NXDOMAIN:
        raise MxLookupError(
            f"domain {domain} does not exist", outcome="bounced", enhanced="5.1.2"
        ) from None
    except dns.resolver.NoAnswer:
        answer = None
    except dns.exception.DNSException as error:
        raise _deferred(domain, type(error).__name__) from None

    if answer is None:
        # No MX: the domain's own addresses are its implicit MX (RFC 5321 section 5.1).
        try:
            addresses = await _addresses(resolver, domain)
        except dns.exception.DNSException as error:
            raise _deferred(domain, type(error).__name__) from None
        if not addresses:
            raise MxLookupError(
                f"domain {domain} has no MX and no address records",
                outcome="bounced",
                enhanced="5.1.2",
            )
        if not usable(addresses):
            raise _refused(domain)
        return [MxHost(name=domain, preference=0, addresses=usable(addresses))]

    records = [record for record in answer if isinstance(record, MX)]
    if any(record.exchange == dns.name.root for record in records):
        # RFC 7505 section 3: a null MX means "no mail"; any other MX beside it is an
        # error of the domain's owner, and the domain still says it takes no mail.
        raise MxLookupError(
            f"domain {domain} accepts no mail (null MX)", outcome="bounced", enhanced="5.1.10"
        )
    # Sort by preference, shuffling equal ones (a random tie-breaker key).
    records.sort(key=lambda record: (record.preference, chooser.random()))
    hosts: list[MxHost] = []
    refused = False
    for record in records:
        name = record.exchange.to_text(omit_final_dot=True)
        try:
            addresses = await _addresses(resolver, name)
        except dns.exception.DNSException:
            continue
        if addresses and not usable(addresses):
            refused = True
        elif addresses:
            hosts.append(
                MxHost(name=name, preference=record.preference, addresses=usable(addresses))
            )
    if not hosts and refused:
        raise _refused(domain)
    if not hosts:
        raise _deferred(domain, "no MX host has an address")
    return hosts
