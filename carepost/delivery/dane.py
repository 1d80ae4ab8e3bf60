"""DANE for SMTP (RFC 7672): TLSA records of an MX host and the certificate check.

The records of ``_25._tcp.<mx host>`` count only when the resolver says the answer
was validated by DNSSEC (the AD bit, from a validating resolver we trust, section
2.1.1); otherwise the host has no usable TLSA. Usable records are DANE-EE(3) and
DANE-TA(2) (section 3.1: PKIX-TA(0) and PKIX-EE(1) are not for SMTP). A DANE-EE
record is matched against the server's own certificate, regardless of its names and
dates (section 3.1.1); selector 0 is the whole certificate, 1 its public key
(SubjectPublicKeyInfo); matching type 0 is the exact bytes, 1 SHA-256, 2 SHA-512.

DANE-TA needs the chain the server sent; Python 3.11's ``ssl`` exposes only the
server's own certificate, so a DANE-TA record matches here only when it designates
that certificate itself. A host whose records cannot be matched fails closed: the
delivery does not go (the caller falls back as policy says), never in the clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

USABLE_USAGES = frozenset({2, 3})


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    matching_type: int
    data: bytes

    @classmethod
    def from_text(cls, text: str) -> Tlsa:
        usage, selector, matching, *data = text.split()
        return cls(int(usage), int(selector), int(matching), bytes.fromhex("".join(data)))


def tlsa_name(host: str, port: int = 25) -> str:
    return f"_{port}._tcp.{host.rstrip('.')}"


def _usable(answer: dns.resolver.Answer) -> tuple[Tlsa, ...]:
    if not answer.response.flags & dns.flags.AD:
        return ()  # not validated: as if there were none (RFC 7672 section 2.2)
    records = [Tlsa.from_text(record.to_text()) for record in answer]
    return tuple(r for r in records if r.usage in USABLE_USAGES and r.matching_type in (0, 1, 2))


def _ask_for_ad(resolver: dns.resolver.Resolver | dns.asyncresolver.Resolver) -> None:
    # RFC 6840 section 5.7: a stub sets AD in its query to learn whether the
    # answer was validated.
    resolver.flags = (resolver.flags or dns.flags.RD) | dns.flags.AD


async def lookup_tlsa(
    resolver: dns.asyncresolver.Resolver, host: str, port: int = 25
) -> tuple[Tlsa, ...]:
    """The usable TLSA records of an MX host; empty when none or not validated."""
    _ask_for_ad(resolver)
    try:
        answer = await resolver.resolve(tlsa_name(host, port), "TLSA", search=False)
    except dns.exception.DNSException:
        return ()
    return _usable(answer)


def lookup_tlsa_sync(
    resolver: dns.resolver.Resolver, host: str, port: int = 25
) -> tuple[Tlsa, ...]:
    _ask_for_ad(resolver)
    try:
        answer = resolver.resolve(tlsa_name(host, port), "TLSA", search=False)
    except dns.exception.DNSException:
        return ()
    return _usable(answer)


def _selected(certificate_der: bytes, selector: int) -> bytes:
    if selector == 0:
        return certificate_der
    certificate = x509.load_der_x509_certificate(certificate_der)
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def matches(record: Tlsa, certificate_der: bytes) -> bool:
    """Whether one certificate is the one ``record`` designates."""
    try:
        selected = _selected(certificate_der, record.selector)
    except ValueError:
        return False
    if record.matching_type == 0:
        return selected == record.data
    if record.matching_type == 1:
        return hashlib.sha256(selected).digest() == record.data
    if record.matching_type == 2:
        return hashlib.sha512(selected).digest() == record.data
    return False


def verify(records: Iterable[Tlsa], chain: list[bytes]) -> bool:
    """Whether the server's certificates (its own first) satisfy one usable record:
    DANE-EE against its own certificate, DANE-TA against any certificate it sent."""
    for record in records:
        if record.usage == 3 and chain and matches(record, chain[0]):
            return True
        if record.usage == 2 and any(matches(record, der) for der in chain):
            return True
    return False


def record_for(
    certificate_der: bytes, usage: int = 3, selector: int = 1, matching: int = 1
) -> Tlsa:
    """The TLSA record designating a certificate (``3 1 1`` by default): what a domain
    owner publishes, and what tests serve."""
    selected = _selected(certificate_der, selector)
    digest = {
        0: selected,
        1: hashlib.sha256(selected).digest(),
        2: hashlib.sha512(selected).digest(),
    }[matching]
    return Tlsa(usage, selector, matching, digest)
