"""TLS and authentication against real aiosmtpd servers with a self-signed certificate
made by ``cryptography``: STARTTLS and implicit TLS to a smarthost (verified against
the configured CA file), SMTP AUTH, and the MX TLS policies (opportunistic by default,
``encrypt`` and ``verify`` defer instead of sending in the clear)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carepost.delivery.transport import Envelope
from tests.delivery.smtp_peers import (
    LoopbackDns,
    running_peer,
    self_signed_certificate,
    server_tls_context,
)

pytestmark = pytest.mark.anyio

DATA = b"Subject: test\r\n\r\nHello over TLS\r\n"
ENVELOPE = Envelope("bounce@clinic.test", ("patient@example.test",), DATA)


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    return self_signed_certificate(tmp_path, names=("localhost", "mx.example.test"))


async def send_one(transport, peer):
    """Deliver ENVELOPE; returns the report and what the peer received."""
    report = await transport.deliver(ENVELOPE)
    await transport.aclose()
    return report, peer.messages


def smarthost(make_transport, port: int, **overrides):
    return make_transport(
        smtp_mode="smarthost", smarthost_host="localhost", smarthost_port=port, **overrides
    )


async def test_starttls_to_smarthost_verified_with_ca_file(make_transport, certificate):
    context = server_tls_context(certificate)
    with running_peer(tls_context=context, require_starttls=True) as peer:
        transport = smarthost(
            make_transport, peer.port, smarthost_tls="starttls", smarthost_ca_file=certificate
        )
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "delivered"
    assert report.tls is True
    assert [(m.data, m.tls) for m in received] == [(DATA, True)]


async def test_starttls_to_smarthost_with_untrusted_certificate_defers(make_transport, certificate):
    context = server_tls_context(certificate)
    with running_peer(tls_context=context, require_starttls=True) as peer:
        transport = smarthost(make_transport, peer.port, smarthost_tls="starttls")
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "deferred"
    assert "TLS handshake failed" in report.outcomes[0].text
    assert received == []


async def test_smarthost_without_starttls_defers_when_starttls_is_configured(make_transport):
    with running_peer() as peer:
        transport = smarthost(make_transport, peer.port, smarthost_tls="starttls")
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "deferred"
    assert "STARTTLS" in report.outcomes[0].text
    assert received == []


async def test_implicit_tls_to_smarthost(make_transport, certificate):
    context = server_tls_context(certificate)
    with running_peer(tls_context=context, implicit_tls=True) as peer:
        transport = smarthost(
            make_transport, peer.port, smarthost_tls="implicit", smarthost_ca_file=certificate
        )
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "delivered" and report.tls is True
    assert [m.data for m in received] == [DATA]


async def deliver_with_login(make_transport, certificate, password: str, count: int):
    """Deliver ``count`` times to a STARTTLS server that wants user carepost with
    password s3cret-pw, logging in with ``password``; returns the reports and the peer."""
    context = server_tls_context(certificate)
    with running_peer(
        tls_context=context, require_starttls=True, credentials=("carepost", "s3cret-pw")
    ) as peer:
        transport = smarthost(
            make_transport,
            peer.port,
            smarthost_ca_file=certificate,
            smarthost_username="carepost",
            smarthost_password=password,
        )
        reports = [await transport.deliver(ENVELOPE) for _ in range(count)]
        await transport.aclose()
    return reports, peer


async def test_auth_after_starttls(make_transport, certificate):
    reports, peer = await deliver_with_login(make_transport, certificate, "s3cret-pw", 3)
    sessions, received = peer.state.sessions, peer.messages

    assert [r.outcomes[0].status for r in reports] == ["delivered"] * 3
    assert len(received) == 3 and sessions == 1  # one login, three messages


async def test_wrong_password_defers_and_says_why(make_transport, certificate):
    [report], peer = await deliver_with_login(make_transport, certificate, "wrong", 1)
    received = peer.messages

    outcome = report.outcomes[0]
    assert (outcome.status, outcome.code) == ("deferred", 535)
    assert "wrong" not in outcome.text
    assert received == []


def mx_zone(port_host: str = "127.0.0.1") -> dict[str, dict[str, list[str]]]:
    return {
        "example.test": {"MX": ["10 mx.example.test."]},
        "mx.example.test": {"A": [port_host]},
    }


def mx_transport(make_transport, dns: LoopbackDns, port: int, **overrides):
    return make_transport(
        smtp_mode="mx",
        dns_nameserver="127.0.0.1",
        dns_port=dns.port,
        mx_port=port,
        mx_allow_non_global=True,
        **overrides,
    )


async def test_mx_opportunistic_tls_encrypts_without_verifying(make_transport, certificate):
    # The certificate is self-signed: opportunistic TLS (RFC 7435) still uses it.
    context = server_tls_context(certificate)
    with LoopbackDns(mx_zone()) as dns, running_peer(tls_context=context) as peer:
        transport = mx_transport(make_transport, dns, peer.port)
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "delivered"
    assert (report.host, report.tls) == ("mx.example.test", True)
    assert [m.tls for m in received] == [True]


async def test_mx_opportunistic_falls_back_to_clear_text_when_tls_breaks(
    make_transport, certificate
):
    context = server_tls_context(certificate)
    with LoopbackDns(mx_zone()) as dns, running_peer(tls_context=context, broken_tls=True) as peer:
        transport = mx_transport(make_transport, dns, peer.port)
        report = await transport.deliver(ENVELOPE)
        await transport.aclose()
        received, sessions = peer.messages, peer.state.sessions

    assert report.outcomes[0].status == "delivered"
    assert report.tls is False
    assert [m.tls for m in received] == [False]
    assert sessions == 2  # the broken TLS attempt, then the clear-text session


async def test_mx_encrypt_policy_defers_when_tls_breaks(make_transport, certificate):
    context = server_tls_context(certificate)
    with LoopbackDns(mx_zone()) as dns, running_peer(tls_context=context, broken_tls=True) as peer:
        transport = mx_transport(make_transport, dns, peer.port, tls_policy="encrypt")
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "deferred"
    assert received == []


async def test_mx_encrypt_policy_defers_when_starttls_is_not_offered(make_transport):
    with LoopbackDns(mx_zone()) as dns, running_peer() as peer:
        transport = mx_transport(make_transport, dns, peer.port, tls_policy="encrypt")
        report, received = await send_one(transport, peer)

    assert report.outcomes[0].status == "deferred"
    assert received == []


async def test_mx_verify_policy_checks_the_certificate(make_transport, certificate):
    context = server_tls_context(certificate)
    with LoopbackDns(mx_zone()) as dns, running_peer(tls_context=context) as peer:
        untrusted = mx_transport(make_transport, dns, peer.port, tls_policy="verify")
        refused = await untrusted.deliver(ENVELOPE)
        trusted = mx_transport(
            make_transport, dns, peer.port, tls_policy="verify", tls_ca_file=certificate
        )
        accepted = await trusted.deliver(ENVELOPE)
        await trusted.aclose()
        received = peer.messages

    assert refused.outcomes[0].status == "deferred"
    # Verified against the MX host name (mx.example.test is in the certificate).
    assert (accepted.outcomes[0].status, accepted.tls) == ("delivered", True)
    assert len(received) == 1
