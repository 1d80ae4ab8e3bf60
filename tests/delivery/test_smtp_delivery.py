"""Delivery through a smarthost to a real aiosmtpd sink on loopback: the exact bytes,
several recipients in one transaction, per-recipient outcomes, connection reuse and the
per-domain limits, observed at the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from carepost.delivery.smtp import SmtpTransport
from carepost.delivery.transport import Envelope
from tests.delivery.smtp_peers import SmtpPeer, running_peer

pytestmark = pytest.mark.anyio

MESSAGE = (
    b"From: Clinic <news@clinic.test>\r\n"
    b"To: patient@example.test\r\n"
    b"Subject: Your appointment\r\n"
    b"Message-ID: <1@clinic.test>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line that starts with a dot survives dot-stuffing\r\n"
    b".\r\n"
    b"Caf\xc3\xa9 on Tuesday.\r\n"
)


@pytest.fixture
def sink() -> Iterator[SmtpPeer]:
    with running_peer() as peer:
        yield peer


@pytest.fixture
def smarthost(make_transport, sink) -> Callable[..., SmtpTransport]:
    def make(**overrides) -> SmtpTransport:
        return make_transport(
            smtp_mode="smarthost",
            smarthost_host=sink.host,
            smarthost_port=sink.port,
            smarthost_tls="none",
            **overrides,
        )

    return make


def envelope(*recipients: str, data: bytes = MESSAGE) -> Envelope:
    return Envelope(mail_from="bounce+1@clinic.test", recipients=recipients, data=data)


async def test_message_arrives_with_exact_bytes(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(envelope("patient@example.test"))
    await transport.aclose()

    assert [o.status for o in report.outcomes] == ["delivered"]
    outcome = report.outcomes[0]
    assert (outcome.code, outcome.enhanced, outcome.text) == (250, "2.0.0", "2.0.0 Ok: queued")
    assert report.host == sink.host and report.tls is False
    [received] = sink.messages
    assert received.data == MESSAGE
    assert received.mail_from == "bounce+1@clinic.test"
    assert received.rcpt_tos == ["patient@example.test"]
    # RFC 1870 SIZE is the exact octet count; RFC 6152 BODY=8BITMIME for the 8-bit body.
    assert f"SIZE={len(MESSAGE)}" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options


async def test_recipients_of_one_domain_share_one_transaction(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(envelope("a@example.test", "b@example.test", "c@example.test"))
    await transport.aclose()

    assert [o.status for o in report.outcomes] == ["delivered"] * 3
    [received] = sink.messages
    assert received.rcpt_tos == ["a@example.test", "b@example.test", "c@example.test"]


async def test_a_550_to_one_rcpt_bounces_that_recipient_only(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(
        envelope("a@example.test", "unknown-1@example.test", "b@example.test")
    )
    await transport.aclose()

    assert [(o.recipient, o.status) for o in report.outcomes] == [
        ("a@example.test", "delivered"),
        ("unknown-1@example.test", "bounced"),
        ("b@example.test", "delivered"),
    ]
    bounced = report.outcomes[1]
    assert (bounced.code, bounced.enhanced) == (550, "5.1.1")
    assert bounced.text == "5.1.1 No such user here"
    [received] = sink.messages
    assert received.rcpt_tos == ["a@example.test", "b@example.test"]


async def test_every_rcpt_refused_sends_no_data_and_keeps_the_connection(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(envelope("unknown-1@example.test"))
    again = await transport.deliver(envelope("patient@example.test"))
    await transport.aclose()

    assert [o.status for o in report.outcomes] == ["bounced"]
    assert [o.status for o in again.outcomes] == ["delivered"]
    assert len(sink.messages) == 1
    assert sink.state.sessions == 1  # RSET, then the same session carried on


async def test_connection_is_reused_for_many_messages(smarthost, sink):
    transport = smarthost()
    for number in range(5):
        report = await transport.deliver(envelope(f"p{number}@example.test"))
        assert report.outcomes[0].status == "delivered"
    await transport.aclose()

    assert len(sink.messages) == 5
    assert sink.state.sessions == 1
    assert len({m.session_id for m in sink.messages}) == 1


async def test_connection_is_replaced_after_max_messages(smarthost, sink):
    transport = smarthost(smtp_connection_max_messages=2)
    for number in range(5):
        await transport.deliver(envelope(f"p{number}@example.test"))
    await transport.aclose()

    assert len(sink.messages) == 5
    assert sink.state.sessions == 3


async def test_server_closing_the_pooled_connection_between_messages(smarthost, sink):
    sink.behaviour.close_after_message = True
    transport = smarthost()
    first = await transport.deliver(envelope("a@example.test"))
    await asyncio.sleep(0.2)  # the server has closed the idle session by now
    second = await transport.deliver(envelope("b@example.test"))
    await transport.aclose()

    assert [first.outcomes[0].status, second.outcomes[0].status] == ["delivered"] * 2
    assert [m.rcpt_tos for m in sink.messages] == [["a@example.test"], ["b@example.test"]]
    assert sink.state.sessions == 2


async def test_421_on_a_reused_connection_is_retried_on_a_fresh_one(smarthost, sink):
    sink.behaviour.reply_421_on_reused = True
    transport = smarthost()
    first = await transport.deliver(envelope("a@example.test"))
    second = await transport.deliver(envelope("b@example.test"))
    await transport.aclose()

    assert [first.outcomes[0].status, second.outcomes[0].status] == ["delivered"] * 2
    assert len(sink.messages) == 2
    assert sink.state.sessions == 2


async def deliver_at_once(transport: SmtpTransport, addresses: list[str]) -> None:
    """Deliver to each address, all at once; every one must be delivered."""
    reports = await asyncio.gather(*(transport.deliver(envelope(a)) for a in addresses))
    await transport.aclose()
    assert all(r.outcomes[0].status == "delivered" for r in reports)


async def test_domain_concurrency_limit_is_observed_at_the_server(smarthost, sink):
    sink.behaviour.data_delay = 0.2
    await deliver_at_once(
        smarthost(smtp_domain_concurrency=2), [f"p{n}@example.test" for n in range(8)]
    )

    assert len(sink.messages) == 8
    assert sink.state.max_active == 2


async def test_other_domains_are_not_held_by_one_domains_limit(smarthost, sink):
    sink.behaviour.data_delay = 0.2
    await deliver_at_once(
        smarthost(smtp_domain_concurrency=1), [f"p@d{n}.example.test" for n in range(4)]
    )

    assert sink.state.max_active == 4


async def test_domain_rate_limit_spaces_messages(smarthost, sink):
    transport = smarthost(smtp_domain_rate=10.0)
    started = time.monotonic()
    await asyncio.gather(*(transport.deliver(envelope(f"p{n}@example.test")) for n in range(25)))
    elapsed = time.monotonic() - started
    await transport.aclose()

    assert len(sink.messages) == 25
    # A burst of 10, then 15 more at 10 per second.
    assert elapsed >= 1.4


async def test_internationalized_address_uses_smtputf8(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(envelope("josé@example.test"))
    await transport.aclose()

    assert report.outcomes[0].status == "delivered"
    [received] = sink.messages
    assert received.rcpt_tos == ["josé@example.test"]
    assert "SMTPUTF8" in received.mail_options


async def test_empty_envelope_reports_nothing(smarthost, sink):
    transport = smarthost()
    report = await transport.deliver(envelope())
    assert report.outcomes == () and sink.messages == []


async def test_idle_connections_and_unused_limits_are_let_go(smarthost, sink):
    transport = smarthost(smtp_connection_idle_seconds=0.3, smtp_domain_rate=100.0)
    await transport.deliver(envelope("a@example.test"))
    assert sink.state.active == 1  # kept open for the next message
    await asyncio.sleep(0.5)
    transport._sweep()
    await asyncio.sleep(0.1)

    assert sink.state.active == 0
    assert transport._pools == {} and transport._limits == {}
    again = await transport.deliver(envelope("b@example.test"))
    await transport.aclose()
    assert again.outcomes[0].status == "delivered" and sink.state.sessions == 2
