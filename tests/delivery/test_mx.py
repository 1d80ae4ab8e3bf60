"""Direct MX delivery with a real DNS server on loopback (real DNS packets, dnspython
on both sides): preference order, the next MX when one is down, the implicit MX,
null MX (RFC 7505), unknown domains and DNS trouble."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from carepost.delivery.mx import MxLookupError, make_resolver, resolve_mx
from carepost.delivery.transport import Envelope
from tests.delivery.smtp_peers import LoopbackDns, SmtpPeer, running_peer, start_peer

pytestmark = pytest.mark.anyio

DATA = b"Subject: test\r\n\r\nHello\r\n"

# 127.0.0.0/8 is all loopback on Linux: each MX host gets an address of its own, all
# on the same port (settings mx_port), and 127.0.0.2 has nobody listening.
ZONE: dict[str, dict[str, list[str]]] = {
    "fallback.test": {"MX": ["20 mx-up.fallback.test.", "10 mx-down.fallback.test."]},
    "mx-down.fallback.test": {"A": ["127.0.0.2"]},
    "mx-up.fallback.test": {"A": ["127.0.0.3"]},
    "ordered.test": {"MX": ["30 mx-c.ordered.test.", "10 mx-a.ordered.test."]},
    "mx-a.ordered.test": {"A": ["127.0.0.3"]},
    "mx-c.ordered.test": {"A": ["127.0.0.4"]},
    "plain.test": {"A": ["127.0.0.3"]},
    "nomail.test": {"MX": ["0 ."], "A": ["127.0.0.3"]},
    "empty.test": {"TXT": ['"v=spf1 -all"']},
    "alldown.test": {"MX": ["10 mx-down.fallback.test."]},
}


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    with LoopbackDns(ZONE, servfail={"broken.test"}) as server:
        yield server


@pytest.fixture
def mx_up() -> Iterator[SmtpPeer]:
    with running_peer(host="127.0.0.3") as peer:
        yield peer


def transport_for(make_transport, dns_server: LoopbackDns, port: int):
    return make_transport(
        smtp_mode="mx",
        dns_nameserver="127.0.0.1",
        dns_port=dns_server.port,
        mx_port=port,
        mx_allow_non_global=True,
    )


@pytest.fixture
def deliver(make_transport, dns_server, mx_up):
    """``await deliver("domain.test")``: one envelope to two recipients of the domain."""

    async def send(domain: str):
        transport = transport_for(make_transport, dns_server, mx_up.port)
        report = await transport.deliver(envelope(domain))
        await transport.aclose()
        return report

    return send


def envelope(domain: str) -> Envelope:
    return Envelope("bounce@clinic.test", (f"a@{domain}", f"b@{domain}"), DATA)


async def test_next_mx_is_tried_when_the_preferred_one_is_down(deliver, mx_up):
    report = await deliver("fallback.test")

    assert [o.status for o in report.outcomes] == ["delivered", "delivered"]
    assert report.host == "mx-up.fallback.test"
    assert [m.rcpt_tos for m in mx_up.messages] == [["a@fallback.test", "b@fallback.test"]]


async def test_mx_hosts_are_used_in_preference_order(make_transport, dns_server):
    best = start_peer(host="127.0.0.3")
    try:
        with running_peer(host="127.0.0.4", port=best.port) as worse:
            transport = transport_for(make_transport, dns_server, best.port)
            report = await transport.deliver(envelope("ordered.test"))
            await transport.aclose()
            best_messages, worse_messages = best.messages, worse.messages
    finally:
        best.stop()

    assert report.host == "mx-a.ordered.test"
    assert len(best_messages) == 1 and worse_messages == []


async def test_domain_without_mx_receives_at_its_address(deliver, mx_up):
    report = await deliver("plain.test")

    assert report.outcomes[0].status == "delivered"
    assert report.host == "plain.test"
    assert len(mx_up.messages) == 1


async def test_null_mx_bounces_without_connecting(deliver, mx_up):
    report = await deliver("nomail.test")

    assert [(o.status, o.enhanced) for o in report.outcomes] == [("bounced", "5.1.10")] * 2
    assert "null MX" in report.outcomes[0].text
    assert report.host is None
    assert mx_up.state.sessions == 0


async def test_unknown_domain_bounces(deliver, mx_up):
    report = await deliver("no-such-domain.test")

    assert [(o.status, o.enhanced) for o in report.outcomes] == [("bounced", "5.1.2")] * 2


async def test_domain_with_neither_mx_nor_address_bounces(deliver, mx_up):
    report = await deliver("empty.test")

    assert report.outcomes[0].status == "bounced"


async def test_dns_failure_defers(deliver, mx_up):
    report = await deliver("broken.test")

    assert [(o.status, o.enhanced) for o in report.outcomes] == [("deferred", "4.4.3")] * 2


async def test_every_mx_down_defers(deliver, mx_up):
    report = await deliver("alldown.test")

    assert [o.status for o in report.outcomes] == ["deferred", "deferred"]
    assert report.outcomes[0].text == "connection refused"
    assert report.host == "mx-down.fallback.test"


async def test_mx_answers_are_cached(make_transport, dns_server, mx_up):
    transport = transport_for(make_transport, dns_server, mx_up.port)
    for _ in range(3):
        await transport.deliver(envelope("plain.test"))
    await transport.aclose()

    assert dns_server.queries.count(("plain.test", "MX")) == 1
    assert len(mx_up.messages) == 3


async def test_equal_preferences_are_shuffled(dns_server):
    zone_names = [f"mx{n}.tie.test." for n in range(4)]
    records = {"tie.test": {"MX": [f"10 {name}" for name in zone_names]}}
    records.update({name.rstrip("."): {"A": ["127.0.0.9"]} for name in zone_names})
    with LoopbackDns(records) as server:
        resolver = make_resolver("127.0.0.1", server.port)
        orders = set()
        for seed in range(12):
            hosts = await resolve_mx(
                "tie.test", resolver, rng=random.Random(seed), allow_non_global=True
            )
            orders.add(tuple(host.name for host in hosts))
    assert len(orders) > 1
    assert all(sorted(order) == sorted(n.rstrip(".") for n in zone_names) for order in orders)


async def test_resolve_mx_reports_the_outcome(dns_server):
    resolver = make_resolver("127.0.0.1", dns_server.port)
    hosts = await resolve_mx("fallback.test", resolver, allow_non_global=True)
    assert [(h.name, h.preference, h.addresses) for h in hosts] == [
        ("mx-down.fallback.test", 10, ("127.0.0.2",)),
        ("mx-up.fallback.test", 20, ("127.0.0.3",)),
    ]
    with pytest.raises(MxLookupError) as raised:
        await resolve_mx("nomail.test", resolver, allow_non_global=True)
    assert raised.value.outcome == "bounced"
