"""DANE for SMTP (RFC 7672): TLSA records of an MX host and the certificate check.

The records of ``_25._tcp.<mx host>`` count only when the resolver says the answer
was validated by DNSSEC (the AD bit, from a validating resolver we trust, section
2.1.1); otherwise the host has no usable TLSA. Usable records are DANE-EE(3) and
DANE-TA(2) (section 3.1: PKIX-TA(0) and PKIX-EE(1) are not for SMTP). A DANE-EE
record is matched against the server's own certificate, regardless of its names and
dates (section 3.1.1); selector 0 is the whole certificate, 1 its public key
(SubjectPublicKeyInfo); matching type 0 is the exact bytes, 1 SHA-256, 2 SHA-512.

A DANE-TA record designates a trust anchor the server must send in its chain
(RFC 7671 section 5.2.2): it is found among the certificates the server sent
(:func:`peer_chain`), and the server's certificate must chain to it, each
certificate signed by the next up to the anchor, the leaf and the intermediates
within their dates; the anchor's own fields are not checked (it is trusted as a
root in a store would be). With DANE-TA the server's certificate must also carry
the MX host's name (RFC 7672 section 3.2.2) when the caller gives the names to
check. A host whose records cannot be matched fails closed: the delivery does not
go (the caller falls back as policy says), never in the clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
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


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the server sent, its own first, as DER (unverified: DANE
    decides what they are worth). Python 3.13 has ``get_unverified_chain``; 3.10 to
    3.12 have it on the underlying ``_ssl`` object only."""
    chain: Any = None
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        chain = getter()
    if chain:
        return [
            c if isinstance(c, bytes) else bytes(c.public_bytes(_ssl_der_encoding())) for c in chain
        ]
    own = ssl_object.getpeercert(binary_form=True)
    return [own] if own else []


def _ssl_der_encoding() -> int:
    import _ssl

    return int(_ssl.ENCODING_DER)


def _load(chain: Sequence[bytes]) -> list[x509.Certificate] | None:
    try:
        return [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return None


def _within_dates(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _chains_to(certificates: list[x509.Certificate], anchor: int, now: datetime) -> bool:
    """Whether certificates[0] chains to certificates[anchor] through the ones between,
    each signed by the next, each but the anchor within its dates."""
    for index in range(anchor):
        child, parent = certificates[index], certificates[index + 1]
        if not _within_dates(child, now):
            return False
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return True


def _names(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower().rstrip(".") for name in extension.value.get_values_for_type(x509.DNSName)]


def name_matches(certificate: x509.Certificate, reference: Iterable[str]) -> bool:
    """Whether a subjectAltName DNS name of the certificate is one of the reference
    names, a wildcard standing for one whole leftmost label (RFC 6125 section 6.4.3)."""
    wanted = {name.lower().rstrip(".") for name in reference}
    for name in _names(certificate):
        if name in wanted:
            return True
        if name.startswith("*.") and any(
            "." in w and w.split(".", 1)[1] == name[2:] for w in wanted
        ):
            return True
    return False


def verify(
    records: Iterable[Tlsa],
    chain: Sequence[bytes],
    *,
    names: Sequence[str] = (),
    now: datetime | None = None,
) -> bool:
    """Whether the server's certificates (its own first, as sent) satisfy one usable
    record: DANE-EE against its own certificate (names and dates ignored, RFC 7672
    section 3.1.1); DANE-TA against a certificate of the chain that the server's own
    certificate chains to (:func:`_chains_to`), and, when ``names`` are given, whose
    leaf carries one of them (section 3.2.2)."""
    records = list(records)
    if not chain:
        return False
    if any(r.usage == 3 and matches(r, chain[0]) for r in records):
        return True
    anchored = [
        index
        for index, der in enumerate(chain)
        if any(r.usage == 2 and matches(r, der) for r in records)
    ]
    if not anchored:
        return False
    certificates = _load(chain)
    if certificates is None:
        return False
    moment = now or datetime.now(UTC)
    if names and not name_matches(certificates[0], names):
        return False
    return any(_chains_to(certificates, index, moment) for index in anchored)


def verify_connection(records: Iterable[Tlsa], ssl_object: Any, host: str) -> bool:
    """:func:`verify` for an open TLS connection to the MX ``host``: the chain it sent,
    and the host's name for DANE-TA."""
    return verify(records, peer_chain(ssl_object), names=(host,))


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
