"""DANE (RFC 7672) and MTA-STS enforcement in the SMTP transport: TLSA matching, and
envelopes that require verified TLS against real aiosmtpd peers and a loopback DNS
server that marks its answers DNSSEC-validated (AD) or not."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.flags
import dns.message
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from carepost.core.config import load_settings
from carepost.delivery import dane
from carepost.delivery.smtp import SmtpTransport
from carepost.delivery.transport import Envelope, transport_from_settings
from tests.delivery.smtp_peers import (
    LoopbackDns,
    running_peer,
    self_signed_certificate,
    server_tls_context,
)

DATA = b"Subject: results\r\n\r\nPHI goes only over verified TLS\r\n"


class ValidatingDns(LoopbackDns):
    """A loopback DNS server whose answers say they were DNSSEC-validated (AD), as a
    validating resolver's would."""

    def __init__(self, records, *, validated: bool = True) -> None:
        super().__init__(records)
        self.validated = validated

    def answer(self, wire: bytes) -> bytes:
        response = dns.message.from_wire(super().answer(wire))
        if self.validated:
            response.flags |= dns.flags.AD
        return response.to_wire()


def other_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "other"
    directory.mkdir(exist_ok=True)
    return directory


def der_of(certificate: Path) -> bytes:
    return x509.load_pem_x509_certificate(certificate.read_bytes()).public_bytes(Encoding.DER)


def test_tlsa_records_match_by_certificate_or_public_key_and_digest(tmp_path):
    der = der_of(self_signed_certificate(tmp_path, names=("mx.example.test",)))
    other = der_of(self_signed_certificate(other_directory(tmp_path), names=("x.test",)))
    for selector in (0, 1):
        for matching in (0, 1, 2):
            record = dane.record_for(der, 3, selector, matching)
            assert dane.matches(record, der)
            assert dane.verify([record], [der])
            assert not dane.verify([record], [other])
    assert dane.verify([dane.record_for(der, 2, 1, 1)], [der])  # the TA is the server's own
    # A TA the server's certificate does not chain to (tests/delivery/test_gwin_dane_ta.py).
    assert not dane.verify([dane.record_for(der, 2, 1, 1)], [other, der])
    assert not dane.verify([dane.record_for(der, 1, 1, 1)], [der])  # PKIX-EE: not for SMTP
    parsed = dane.Tlsa.from_text(f"3 1 1 {dane.record_for(der).data.hex()}")
    assert parsed == dane.record_for(der)


def domain_records(domain: str, tlsa: str | None) -> dict[str, dict[str, list[str]]]:
    records: dict[str, dict[str, list[str]]] = {
        domain: {"MX": [f"10 mx.{domain}."]},
        f"mx.{domain}": {"A": ["127.0.0.1"]},
    }
    if tlsa is not None:
        records[f"_25._tcp.mx.{domain}"] = {"TLSA": [tlsa]}
    return records


def transport(dns_port: int, mx_port: int, ca_file: Path | None = None) -> SmtpTransport:
    made = transport_from_settings(
        load_settings(
            smtp_mode="mx",
            dns_nameserver="127.0.0.1",
            dns_port=dns_port,
            mx_port=mx_port,
            mx_allow_non_global=True,
            tls_ca_file=ca_file,
            smtp_helo_name="sender.carepost.test",
            smtp_connect_timeout=3.0,
            smtp_command_timeout=3.0,
            smtp_data_timeout=3.0,
        )
    )
    assert isinstance(made, SmtpTransport)
    return made


def deliver(envelope: Envelope, dns: LoopbackDns, port: int, ca_file: Path | None = None):
    """Deliver on an event loop of its own thread: these tests run after the browser
    tests, whose Playwright keeps a loop running in the main thread until the end."""

    async def go():
        sender = transport(dns.port, port, ca_file)
        try:
            return await sender.deliver(envelope)
        finally:
            await sender.aclose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def domain() -> str:
    return f"dane-{uuid.uuid4().hex[:8]}.example"


@pytest.fixture
def certificate(tmp_path: Path, domain: str) -> Path:
    return self_signed_certificate(tmp_path, names=(f"mx.{domain}",))


def envelope(domain: str, **fields) -> Envelope:
    return Envelope("bounce@clinic.test", (f"pat@{domain}",), DATA, **fields)


def test_a_validated_dane_ee_record_verifies_a_certificate_no_ca_signed(domain, certificate):
    record = dane.record_for(der_of(certificate))
    tlsa = f"3 1 1 {record.data.hex()}"
    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        ValidatingDns(domain_records(domain, tlsa)) as dns,
    ):
        report = deliver(envelope(domain, tls="verified"), dns, peer.port)
        received = peer.messages
    assert [o.status for o in report.outcomes] == ["delivered"]
    assert [(m.data, m.tls) for m in received] == [(DATA, True)]


def test_a_certificate_that_does_not_match_its_tlsa_records_is_refused(
    domain, certificate, tmp_path
):
    stranger = der_of(self_signed_certificate(other_directory(tmp_path), names=("x.test",)))
    tlsa = f"3 1 1 {dane.record_for(stranger).data.hex()}"
    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        ValidatingDns(domain_records(domain, tlsa)) as dns,
    ):
        report = deliver(envelope(domain, tls="verified"), dns, peer.port)
        received = peer.messages
    assert [o.status for o in report.outcomes] == ["tls_unavailable"]
    assert "DANE" in report.outcomes[0].text
    assert received == []


def test_tlsa_records_not_validated_by_dnssec_are_ignored(domain, certificate):
    record = dane.record_for(der_of(certificate))
    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        ValidatingDns(domain_records(domain, f"3 1 1 {record.data.hex()}"), validated=False) as dns,
    ):
        # Without AD the records do not count: PKIX applies, and no CA signed it.
        report = deliver(envelope(domain, tls="verified"), dns, peer.port)
        received = peer.messages
    assert [o.status for o in report.outcomes] == ["tls_unavailable"]
    assert received == []


def test_mta_sts_mx_patterns_keep_delivery_off_other_hosts(domain, certificate):
    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        LoopbackDns(domain_records(domain, None)) as dns,
    ):
        refused = deliver(
            envelope(domain, tls="verified", mx_patterns=(f"*.elsewhere.{domain}",)),
            dns, peer.port, certificate,
        )  # fmt: skip
        allowed = deliver(
            envelope(domain, tls="verified", mx_patterns=(f"mx.{domain}",)),
            dns, peer.port, certificate,
        )  # fmt: skip
        received = peer.messages
    assert [o.status for o in refused.outcomes] == ["tls_unavailable"]
    assert [o.status for o in allowed.outcomes] == ["delivered"]
    assert [m.tls for m in received] == [True]


def test_required_tls_asks_for_tls_1_2_at_least(domain, certificate):
    context = server_tls_context(certificate)
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        running_peer(tls_context=context) as peer,
        LoopbackDns(domain_records(domain, None)) as dns,
    ):
        report = deliver(envelope(domain, tls="starttls"), dns, peer.port)
        received = peer.messages
    assert [o.status for o in report.outcomes] == ["tls_unavailable"]
    assert received == []


def test_starttls_required_without_starttls_is_never_sent_in_the_clear(domain):
    with running_peer() as peer, LoopbackDns(domain_records(domain, None)) as dns:
        required = deliver(envelope(domain, tls="starttls"), dns, peer.port)
        assert peer.messages == []
        opportunistic = deliver(envelope(domain), dns, peer.port)
        received = peer.messages
    assert [o.status for o in required.outcomes] == ["tls_unavailable"]
    assert [o.status for o in opportunistic.outcomes] == ["delivered"]
    assert [m.tls for m in received] == [False]
