"""Direct MX delivery refuses hosts at non-global addresses (an SSRF through DNS: a
recipient domain whose MX points at loopback, a private network or link-local must not
make the worker connect there), unless ``mx_allow_non_global`` says it is a lab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from carepost.delivery.mx import MxLookupError, is_global_address, make_resolver, resolve_mx
from carepost.delivery.transport import Envelope
from tests.delivery.smtp_peers import LoopbackDns, SmtpPeer, running_peer

pytestmark = pytest.mark.anyio

ZONE: dict[str, dict[str, list[str]]] = {
    "loop.test": {"MX": ["10 mx.loop.test."]},
    "mx.loop.test": {"A": ["127.0.0.3"]},
    "inside.test": {"MX": ["10 a.inside.test.", "20 b.inside.test.", "30 c.inside.test."]},
    "a.inside.test": {"A": ["10.1.2.3"]},
    "b.inside.test": {"A": ["169.254.169.254"]},
    "c.inside.test": {"AAAA": ["fd00::1", "::ffff:192.168.1.1"]},
    "mixed.test": {"MX": ["10 priv.mixed.test.", "20 pub.mixed.test."]},
    "priv.mixed.test": {"A": ["192.168.0.10"]},
    "pub.mixed.test": {"A": ["192.0.2.1", "8.8.8.8"]},
    "implicit.test": {"A": ["100.64.0.1"]},
}


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    with LoopbackDns(ZONE) as server:
        yield server


@pytest.fixture
def mx_up() -> Iterator[SmtpPeer]:
    with running_peer(host="127.0.0.3") as peer:
        yield peer


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("192.0.2.1", False),  # documentation range: reserved
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("not-an-address", False),
    ],
)
def test_is_global_address(address: str, ok: bool) -> None:
    assert is_global_address(address) is ok


async def test_every_mx_non_global_bounces_without_connecting(make_transport, dns_server, mx_up):
    transport = make_transport(
        smtp_mode="mx", dns_nameserver="127.0.0.1", dns_port=dns_server.port, mx_port=mx_up.port
    )
    try:
        report = await transport.deliver(
            Envelope("bounce@example.org", ("a@loop.test",), b"Subject: t\r\n\r\nHi\r\n")
        )
    finally:
        await transport.aclose()

    assert [(o.status, o.enhanced) for o in report.outcomes] == [("bounced", "5.4.4")]
    assert "non-global" in report.outcomes[0].text
    assert mx_up.state.sessions == 0


async def test_the_setting_allows_loopback_for_labs(make_transport, dns_server, mx_up):
    transport = make_transport(
        smtp_mode="mx",
        dns_nameserver="127.0.0.1",
        dns_port=dns_server.port,
        mx_port=mx_up.port,
        mx_allow_non_global=True,
    )
    try:
        report = await transport.deliver(
            Envelope("bounce@example.org", ("a@loop.test",), b"Subject: t\r\n\r\nHi\r\n")
        )
    finally:
        await transport.aclose()

    assert report.outcomes[0].status == "delivered"
    assert len(mx_up.messages) == 1


async def test_private_link_local_and_mapped_hosts_are_all_refused(dns_server):
    resolver = make_resolver("127.0.0.1", dns_server.port)
    for domain in ("inside.test", "implicit.test"):
        with pytest.raises(MxLookupError) as raised:
            await resolve_mx(domain, resolver)
        assert (raised.value.outcome, raised.value.enhanced) == ("bounced", "5.4.4")


async def test_only_the_global_hosts_and_addresses_are_kept(dns_server):
    resolver = make_resolver("127.0.0.1", dns_server.port)
    hosts = await resolve_mx("mixed.test", resolver)
    assert [(h.name, h.addresses) for h in hosts] == [("pub.mixed.test", ("8.8.8.8",))]
