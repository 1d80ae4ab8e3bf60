"""SMTP command pipelining (RFC 2920): what goes over the wire, and what every reply
of a group means, against scripted servers on loopback that only answer once the
whole group is in (a client that waited for each reply would stall them), and an
aiosmtpd peer for the exact bytes received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiosmtplib import SMTP, SMTPResponse, SMTPResponseException, SMTPServerDisconnected

from carepost.delivery.pipelining import (
    PipeliningProtocol,
    adopt,
    spoke_out_of_turn,
    transaction_replies,
)
from carepost.delivery.smtp import SmtpTransport
from carepost.delivery.transport import DeliveryReport, Envelope
from tests.delivery.smtp_peers import PeerBehaviour, running_peer

pytestmark = pytest.mark.anyio

DATA = b"Subject: pipelined\r\n\r\nHello\r\n.a line that starts with a dot\r\n"
STUFFED = b"Subject: pipelined\r\n\r\nHello\r\n..a line that starts with a dot\r\n.\r\n"


class Wire:
    """The server's side of one connection: what came in, in the chunks it came in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending = b""
        self.chunks: list[bytes] = []

    async def until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker`` (b"" when the client left)."""
        while marker not in self.pending:
            chunk = await self.reader.read(65536)
            if not chunk:
                return b""
            self.chunks.append(chunk)
            self.pending += chunk
        end = self.pending.index(marker) + len(marker)
        taken, self.pending = self.pending[:end], self.pending[end:]
        return taken

    def send(self, *replies: str) -> None:
        """The replies in one write, so the client gets them together."""
        self.writer.write("".join(reply + "\r\n" for reply in replies).encode())


Script = Callable[[Wire], Awaitable[None]]


class Scripted:
    """A server on loopback: greeting and EHLO (with PIPELINING unless told not to),
    then ``script`` per connection, then RSET, NOOP and QUIT as any server does."""

    def __init__(self, script: Script, *, pipelining: bool = True) -> None:
        self.script = script
        self.pipelining = pipelining
        self.wires: list[Wire] = []
        self.commands: list[bytes] = []  # what came after the script, line by line

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire = Wire(reader, writer)
        self.wires.append(wire)
        wire.send("220 scripted.test ESMTP")
        await wire.until(b"\r\n")
        extensions = ["250-scripted.test", "250-8BITMIME", "250-SIZE 1000000"]
        if self.pipelining:
            extensions.append("250-PIPELINING")
        wire.send(*extensions, "250 HELP")
        try:
            await self.script(wire)
            while line := await wire.until(b"\r\n"):
                self.commands.append(line)
                if line.upper().startswith(b"QUIT"):
                    wire.send("221 Bye")
                    break
                wire.send("250 2.0.0 Ok")
        finally:
            writer.close()

    async def deliver(
        self, make_transport: Callable[..., SmtpTransport], *envelopes: Envelope, pause: float = 0
    ) -> list[DeliveryReport]:
        """Deliver ``envelopes`` one after the other through a transport whose smarthost
        is this server (``pause`` seconds between two), then close the transport."""
        reports = []
        async with self.running() as port:
            transport = transport_to(make_transport, port)
            for number, one in enumerate(envelopes):
                if number and pause:
                    await asyncio.sleep(pause)
                reports.append(await transport.deliver(one))
            await transport.aclose()
        return reports

    @asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for wire in self.wires:
                wire.writer.close()


def transport_to(make_transport, port: int):
    return make_transport(
        smtp_mode="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_port=port,
        smarthost_tls="none",
    )


def envelope(*recipients: str, data: bytes = DATA) -> Envelope:
    return Envelope("bounce@clinic.test", recipients or ("patient@example.test",), data)


async def test_a_transaction_is_two_groups(make_transport):
    async def script(wire: Wire) -> None:
        group = await wire.until(b"DATA\r\n")  # nothing is answered before the whole group
        assert group == (
            b"MAIL FROM:<bounce@clinic.test> SIZE=61\r\n"
            b"RCPT TO:<a@example.test>\r\n"
            b"RCPT TO:<b@example.test>\r\n"
            b"DATA\r\n"
        )
        wire.send("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with .")
        assert await wire.until(b"\r\n.\r\n") == STUFFED
        wire.send("250 2.0.0 Ok: queued as 1")

    server = Scripted(script)
    [report] = await server.deliver(make_transport, envelope("a@example.test", "b@example.test"))

    assert [(o.status, o.code, o.text) for o in report.outcomes] == [
        ("delivered", 250, "2.0.0 Ok: queued as 1"),
        ("delivered", 250, "2.0.0 Ok: queued as 1"),
    ]
    assert server.commands == [b"QUIT\r\n"]  # no RSET after a transaction that completed


async def test_replies_split_anywhere_are_read_in_order(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        replies = b"250-2.1.0 sender\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n"
        for at in range(0, len(replies), 7):  # seven bytes a write, mid-line and mid-code
            wire.writer.write(replies[at : at + 7])
            await wire.writer.drain()
            await asyncio.sleep(0.001)
        await wire.until(b"\r\n.\r\n")
        wire.send("250 2.0.0 Ok")

    [report] = await Scripted(script).deliver(make_transport, envelope())

    assert [(o.status, o.code) for o in report.outcomes] == [("delivered", 250)]


async def test_a_server_without_pipelining_gets_one_command_at_a_time(make_transport):
    async def script(wire: Wire) -> None:
        for command, reply in (
            (b"MAIL FROM:<bounce@clinic.test> SIZE=61\r\n", "250 2.1.0 Ok"),
            (b"RCPT TO:<patient@example.test>\r\n", "250 2.1.5 Ok"),
            (b"DATA\r\n", "354 Go ahead"),
        ):
            assert await wire.until(b"\r\n") == command
            assert wire.pending == b""  # the client waited for the reply
            wire.send(reply)
        assert await wire.until(b"\r\n.\r\n") == STUFFED
        wire.send("250 2.0.0 Ok")

    [report] = await Scripted(script, pipelining=False).deliver(make_transport, envelope())

    assert [o.status for o in report.outcomes] == ["delivered"]


async def test_a_refused_sender_refuses_every_recipient_and_the_session_goes_on(
    make_transport,
):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send(
            "550 5.7.1 Sender not allowed",
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need RCPT command",
        )
        assert await wire.until(b"\r\n") == b"RSET\r\n"
        wire.send("250 2.0.0 Ok")
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok", "250 2.1.5 Ok", "354 Go ahead")
        await wire.until(b"\r\n.\r\n")
        wire.send("250 2.0.0 Ok")

    server = Scripted(script)
    refused, later = await server.deliver(
        make_transport, envelope("a@example.test", "b@example.test"), envelope("c@example.test")
    )

    assert [(o.status, o.code, o.enhanced) for o in refused.outcomes] == [
        ("bounced", 550, "5.7.1"),
        ("bounced", 550, "5.7.1"),
    ]
    assert [o.status for o in later.outcomes] == ["delivered"]
    assert len(server.wires) == 1  # the same session carried both


async def test_each_recipient_gets_its_own_reply(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send(
            "250 2.1.0 Ok",
            "550 5.1.1 No such user",
            "451 4.7.1 Greylisted",
            "250 2.1.5 Ok",
            "354 Go",
        )
        await wire.until(b"\r\n.\r\n")
        wire.send("250 2.0.0 Ok")

    [report] = await Scripted(script).deliver(
        make_transport, envelope("unknown@example.test", "grey@example.test", "ok@example.test")
    )

    assert [(o.status, o.code) for o in report.outcomes] == [
        ("bounced", 550),
        ("deferred", 451),
        ("delivered", 250),
    ]


async def test_data_accepted_without_recipients_gets_a_lone_dot_then_rset(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        # Against RFC 2920, this server accepts DATA although it refused every RCPT.
        wire.send("250 2.1.0 Ok", "550 5.1.1 No such user", "354 Go ahead")
        assert await wire.until(b"\r\n") == b".\r\n"  # the content never goes out
        wire.send("554 5.5.1 No valid recipients")
        assert await wire.until(b"\r\n") == b"RSET\r\n"
        wire.send("250 2.0.0 Ok")

    server = Scripted(script)
    [report] = await server.deliver(make_transport, envelope("unknown@example.test"))

    assert [(o.status, o.code) for o in report.outcomes] == [("bounced", 550)]
    assert b"Subject" not in b"".join(server.wires[0].chunks)


async def test_a_refused_data_command_sends_no_content(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok", "250 2.1.5 Ok", "554 5.3.4 Message too big for system")
        assert await wire.until(b"\r\n") == b"RSET\r\n"
        wire.send("250 2.0.0 Ok")

    server = Scripted(script)
    [report] = await server.deliver(make_transport, envelope())

    assert [(o.status, o.code, o.enhanced) for o in report.outcomes] == [("bounced", 554, "5.3.4")]
    assert b"Subject" not in b"".join(server.wires[0].chunks)


async def test_421_in_the_group_ends_the_session_and_defers(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok", "421 4.3.2 Shutting down", "421 4.3.2 Shutting down")
        wire.writer.close()

    server = Scripted(script)
    [report] = await server.deliver(make_transport, envelope())

    assert [(o.status, o.code) for o in report.outcomes] == [("deferred", 421)]


async def test_connection_dropped_after_the_group_defers_without_sending_content(
    make_transport,
):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok")  # one reply of three, then gone
        wire.writer.close()

    server = Scripted(script)
    [report] = await server.deliver(make_transport, envelope())

    assert [(o.status, o.text) for o in report.outcomes] == [("deferred", "connection lost")]
    assert b"Subject" not in b"".join(b"".join(wire.chunks) for wire in server.wires)


async def test_garbage_in_the_group_defers(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok", "HELLO? I am not an SMTP server", "354 Go")

    [report] = await Scripted(script).deliver(make_transport, envelope())

    assert [o.status for o in report.outcomes] == ["deferred"]
    assert report.outcomes[0].code is None


async def test_a_server_speaking_out_of_turn_is_not_reused(make_transport):
    async def script(wire: Wire) -> None:
        await wire.until(b"DATA\r\n")
        wire.send("250 2.1.0 Ok", "250 2.1.5 Ok", "354 Go")
        await wire.until(b"\r\n.\r\n")
        wire.send("250 2.0.0 Ok", "421 4.4.2 Idle too long, closing")  # one too many

    server = Scripted(script)
    first, second = await server.deliver(make_transport, envelope(), envelope(), pause=0.05)

    assert [o.status for o in first.outcomes] == ["delivered"]
    assert [o.status for o in second.outcomes] == ["delivered"]
    assert len(server.wires) == 2  # the second message went on a fresh session


async def test_exact_bytes_and_envelope_through_aiosmtpd(make_transport):
    """aiosmtpd (which reads commands in turn) offering PIPELINING, a rejected
    recipient among good ones, several messages on one session."""
    with running_peer() as peer:
        transport = transport_to(make_transport, peer.port)
        reports = [
            await transport.deliver(envelope("a@example.test", "unknown-b@example.test")),
            await transport.deliver(envelope("c@example.test")),
        ]
        await transport.aclose()
        received = peer.messages
        sessions = peer.state.sessions

    assert [[o.status for o in r.outcomes] for r in reports] == [
        ["delivered", "bounced"],
        ["delivered"],
    ]
    assert [(m.rcpt_tos, m.data) for m in received] == [
        (["a@example.test"], DATA),
        (["c@example.test"], DATA),
    ]
    assert received[0].mail_options == ["SIZE=61"]
    assert sessions == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_both_ways_deliver_the_same_through_aiosmtpd(make_transport, pipelining):
    with running_peer(behaviour=PeerBehaviour(pipelining=pipelining)) as peer:
        transport = transport_to(make_transport, peer.port)
        report = await transport.deliver(envelope("a@example.test", "b@example.test"))
        await transport.aclose()
        received = peer.messages

    assert [o.status for o in report.outcomes] == ["delivered", "delivered"]
    assert [(m.rcpt_tos, m.data) for m in received] == [
        (["a@example.test", "b@example.test"], DATA)
    ]


# The protocol on its own, over a real loopback connection.


@asynccontextmanager
async def connected(script: Script) -> AsyncIterator[tuple[SMTP, Scripted]]:
    server = Scripted(script)
    async with server.running() as port:
        smtp = SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=2)
        await smtp.connect()
        adopt(smtp)
        await smtp.ehlo()
        try:
            yield smtp, server
        finally:
            smtp.close()


async def test_adopting_keeps_aiosmtplib_commands_working():
    async def script(wire: Wire) -> None:
        assert await wire.until(b"\r\n") == b"NOOP\r\n"
        wire.send("250-first line", "250 second line")

    async with connected(script) as (smtp, _):
        assert isinstance(smtp.protocol, PipeliningProtocol)
        assert adopt(smtp) is smtp.protocol  # once is enough
        assert smtp.supports_extension("pipelining")
        response = await smtp.noop()
        assert response == SMTPResponse(250, "first line\nsecond line")
        assert (await smtp.rset()).code == 250


async def test_every_reply_of_a_group_is_kept():
    async def script(wire: Wire) -> None:
        await wire.until(b"NOOP 3\r\n")
        wire.send("250 one", "251-two", "251 two more", "252 three")

    async with connected(script) as (smtp, _):
        replies = await transaction_replies(smtp, [b"NOOP 1", b"NOOP 2", b"NOOP 3"], 2)
        assert replies == [
            SMTPResponse(250, "one"),
            SMTPResponse(251, "two\ntwo more"),
            SMTPResponse(252, "three"),
        ]
        assert not spoke_out_of_turn(smtp)


async def test_a_reply_that_never_ends_is_an_error():
    async def script(wire: Wire) -> None:
        await wire.until(b"NOOP\r\n")
        wire.writer.write(b"250-" + b"x" * 1000 + b"\r\n")
        for _ in range(40):
            wire.writer.write(b"250-" + b"x" * 1000 + b"\r\n")

    async with connected(script) as (smtp, _):
        with pytest.raises(SMTPResponseException, match="Response too long"):
            await smtp.noop()


async def test_a_lost_connection_after_some_replies_gives_them_then_the_loss():
    async def script(wire: Wire) -> None:
        await wire.until(b"NOOP 2\r\n")
        wire.send("250 one")
        wire.writer.close()

    async with connected(script) as (smtp, _):
        protocol = smtp.protocol
        assert isinstance(protocol, PipeliningProtocol)
        protocol.write(b"NOOP 1\r\nNOOP 2\r\n")
        assert await protocol.read_response(timeout=2) == SMTPResponse(250, "one")
        with pytest.raises(SMTPServerDisconnected):
            await protocol.read_response(timeout=2)


async def test_an_unasked_reply_marks_the_connection():
    async def script(wire: Wire) -> None:
        wire.send("421 4.4.2 Idle too long")

    async with connected(script) as (smtp, _):
        for _ in range(100):
            if spoke_out_of_turn(smtp):
                break
            await asyncio.sleep(0.01)
        assert spoke_out_of_turn(smtp)
