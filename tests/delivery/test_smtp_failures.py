"""Receiving servers that misbehave: every kind of trouble ends as a ``deferred`` (or,
for 5xx, ``bounced``) outcome, never as an exception out of ``deliver``, and the
transport keeps working afterwards."""

from __future__ import annotations

import time

import pytest

from carepost.delivery.transport import Envelope
from tests.canaries import phi_value, secret_value
from tests.delivery.smtp_peers import (
    PeerBehaviour,
    closed_port,
    running_peer,
    silent_listener,
)

pytestmark = pytest.mark.anyio

DATA = b"Subject: test\r\n\r\nHello\r\n"


def envelope(*recipients: str) -> Envelope:
    return Envelope("bounce@clinic.test", recipients or ("patient@example.test",), DATA)


def smarthost(make_transport, port: int, **overrides):
    return make_transport(
        smtp_mode="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_port=port,
        smarthost_tls="none",
        **overrides,
    )


async def test_connection_refused_defers(make_transport):
    transport = smarthost(make_transport, closed_port())
    report = await transport.deliver(envelope("a@example.test", "b@example.test"))

    assert [o.status for o in report.outcomes] == ["deferred", "deferred"]
    assert report.outcomes[0].code is None
    assert report.outcomes[0].text == "connection refused"


async def test_server_that_never_greets_times_out_and_defers(make_transport):
    with silent_listener() as port:
        transport = smarthost(make_transport, port, smtp_connect_timeout=0.5)
        started = time.monotonic()
        report = await transport.deliver(envelope())

    assert report.outcomes[0].status == "deferred"
    assert report.outcomes[0].text == "timed out waiting for the server"
    assert time.monotonic() - started < 5


async def test_server_stalling_after_data_times_out_and_defers(make_transport):
    with running_peer(behaviour=PeerBehaviour(stall_seconds=3)) as peer:
        transport = smarthost(make_transport, peer.port, smtp_data_timeout=0.5)
        report = await transport.deliver(envelope())
        await transport.aclose()

    assert report.outcomes[0].status == "deferred"
    assert report.outcomes[0].text == "timed out waiting for the server"


async def test_connection_dropped_mid_data_defers(make_transport):
    with running_peer(behaviour=PeerBehaviour(drop_in_data=True)) as peer:
        transport = smarthost(make_transport, peer.port)
        report = await transport.deliver(envelope("a@example.test", "b@example.test"))
        peer.behaviour.drop_in_data = False
        later = await transport.deliver(envelope("a@example.test"))
        await transport.aclose()
        received = peer.messages

    assert [o.status for o in report.outcomes] == ["deferred", "deferred"]
    assert report.outcomes[0].text == "connection lost"
    # The transport recovers: the next delivery opens a new session and succeeds.
    assert later.outcomes[0].status == "delivered"
    assert [m.rcpt_tos for m in received] == [["a@example.test"]]


async def test_garbage_reply_defers(make_transport):
    with running_peer(behaviour=PeerBehaviour(garbage_on_mail=True)) as peer:
        transport = smarthost(make_transport, peer.port)
        report = await transport.deliver(envelope())
        await transport.aclose()

    outcome = report.outcomes[0]
    assert outcome.status == "deferred"
    assert outcome.code is None
    assert "Malformed SMTP response" in outcome.text


async def test_greylisting_defers_then_delivers(make_transport):
    with running_peer(behaviour=PeerBehaviour(greylist=True)) as peer:
        transport = smarthost(make_transport, peer.port)
        first = await transport.deliver(envelope("a@example.test"))
        second = await transport.deliver(envelope("a@example.test"))
        await transport.aclose()
        received = peer.messages

    assert (first.outcomes[0].status, first.outcomes[0].code) == ("deferred", 451)
    assert first.outcomes[0].enhanced == "4.7.1"
    assert second.outcomes[0].status == "delivered"
    assert len(received) == 1


async def test_temporary_refusal_of_data_defers_and_permanent_bounces(make_transport):
    behaviour = PeerBehaviour(data_reply="452 4.3.1 Insufficient system storage")
    with running_peer(behaviour=behaviour) as peer:
        transport = smarthost(make_transport, peer.port)
        full = await transport.deliver(envelope())
        peer.behaviour.data_reply = "554 5.7.1 Message refused as spam"
        refused = await transport.deliver(envelope())
        await transport.aclose()

    assert (full.outcomes[0].status, full.outcomes[0].code) == ("deferred", 452)
    assert (refused.outcomes[0].status, refused.outcomes[0].enhanced) == ("bounced", "5.7.1")


async def test_address_with_a_line_break_bounces_without_reaching_the_server(make_transport):
    with running_peer() as peer:
        transport = smarthost(make_transport, peer.port)
        report = await transport.deliver(envelope("a@example.test\r\nRCPT TO:<x@y.test>"))
        good = await transport.deliver(envelope("a@example.test"))
        await transport.aclose()
        received = peer.messages

    assert report.outcomes[0].status == "bounced"
    assert good.outcomes[0].status == "delivered"
    assert [m.rcpt_tos for m in received] == [["a@example.test"]]


async def test_logs_carry_no_address_reply_or_password(make_transport, log_file):
    password = secret_value("smarthost-" + phi_value("secret"))
    patient = f"{phi_value('email').lower()}@example.test"
    with running_peer(behaviour=PeerBehaviour(garbage_on_mail=True)) as peer:
        garbage = smarthost(make_transport, peer.port)
        await garbage.deliver(envelope(patient))
    refused = smarthost(
        make_transport, closed_port(), smarthost_username="u", smarthost_password=password
    )
    report = await refused.deliver(envelope(patient))

    assert report.outcomes[0].recipient == patient
    logged = log_file.read_text() if log_file.exists() else ""
    assert "delivery.smtp.connect_failed" in logged
    assert patient not in logged and password not in logged
