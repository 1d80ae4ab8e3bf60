"""Benchmark: the SMTP transport against a bare aiosmtplib loop (the client-side ceiling).

``python -m bench smtp_baseline --messages 20000 --connections 8`` starts an aiosmtpd
sink in a separate process (so the client does not share its event loop or its core),
pre-builds N messages (about 2 KB each, one recipient each, all of one domain), and
sends them twice to the sink:

* ``bare``: ``--connections`` aiosmtplib clients, each looping ``sendmail`` over its
  share of the messages on one connection: no pooling logic, no limits, no outcome
  bookkeeping; the most a Python client can push through aiosmtplib here;
* ``transport``: the same messages through :class:`carepost.delivery.smtp.SmtpTransport`
  built by ``transport_from_settings`` (smarthost mode, ``smtp_domain_concurrency`` =
  ``--connections``), ``--connections`` callers of ``deliver`` at once.

Prints ``smtp_baseline bare messages/s=<n>``, ``smtp_baseline transport messages/s=<n>``
and ``smtp_baseline ratio=<transport/bare>``. The sink counts what it accepted, and
the run fails when a count is off. The end-to-end benchmark of issue 5 (outbox,
workers, database) compares itself to the same bare loop (:func:`bare_loop`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized

import aiosmtplib

from carepost.core.config import load_settings
from carepost.delivery.transport import Envelope, transport_from_settings

SENDER = "bounce@bench.carepost.test"
BODY_LINE = b"Your appointment is confirmed. Reply to this message with questions.\r\n"


def build_messages(count: int) -> list[tuple[str, bytes]]:
    """``count`` (recipient, bytes) pairs, about 2 KB each, all to one domain."""
    messages = []
    for number in range(count):
        recipient = f"patient{number}@sink.test"
        head = (
            f"From: Clinic <news@bench.carepost.test>\r\nTo: {recipient}\r\n"
            f"Subject: Reminder {number}\r\nMessage-ID: <{number}@bench.carepost.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        ).encode()
        messages.append((recipient, head + BODY_LINE * 28))
    return messages


def _sink_main(port_pipe: Connection, accepted: Synchronized[int]) -> None:
    # Imported in the child only: the parent never needs the server.
    from aiosmtpd.smtp import SMTP, Session

    class Counter:
        async def handle_EHLO(
            self,
            server: object,
            session: Session,
            envelope: object,
            hostname: str,
            responses: list[str],
        ) -> list[str]:
            # Offer PIPELINING (RFC 2920) as Postfix and the big providers do; aiosmtpd
            # reads commands in turn, so it takes pipelined groups as they come.
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            with accepted.get_lock():
                accepted.value += 1
            return "250 2.0.0 Ok"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        handler = Counter()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.test"), host="127.0.0.1", port=0
        )
        port_pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    try:
        import uvloop  # the sink should be the faster side; uvloop ships with uvicorn

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


class Sink:
    """An aiosmtpd sink in a child process, counting accepted messages."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.accepted: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        parent, child = context.Pipe()
        self.process = context.Process(target=_sink_main, args=(child, self.accepted), daemon=True)
        self.process.start()
        self.port: int = parent.recv()

    def reset(self) -> None:
        with self.accepted.get_lock():
            self.accepted.value = 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()


async def bare_loop(port: int, messages: Sequence[tuple[str, bytes]], connections: int) -> float:
    """Send ``messages`` with plain aiosmtplib ``sendmail`` loops; returns seconds."""

    async def one_client(share: Sequence[tuple[str, bytes]]) -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
        )
        await client.connect()
        for recipient, data in share:
            await client.sendmail(SENDER, [recipient], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one_client(messages[i::connections]) for i in range(connections)))
    return time.perf_counter() - started


async def transport_loop(
    port: int, messages: Sequence[tuple[str, bytes]], connections: int
) -> float:
    """Send ``messages`` through the carepost transport; returns seconds."""
    settings = load_settings(
        smtp_mode="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_port=port,
        smarthost_tls="none",
        smtp_helo_name="bench.test",
        smtp_domain_concurrency=connections,
        smtp_connection_max_messages=1_000_000,
    )
    transport = transport_from_settings(settings)
    pending = iter(messages)
    failures = 0

    async def caller() -> None:
        nonlocal failures
        for recipient, data in pending:
            report = await transport.deliver(Envelope(SENDER, (recipient,), data))
            failures += sum(outcome.status != "delivered" for outcome in report.outcomes)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    await transport.aclose()
    if failures:
        raise RuntimeError(f"{failures} messages were not delivered")
    return elapsed


def measure(count: int, connections: int) -> tuple[float, float]:
    """Messages per second of the bare loop and of the transport, same sink, same run."""
    messages = build_messages(count)
    sink = Sink()
    try:
        rates = []
        for loop in (bare_loop, transport_loop):
            sink.reset()
            seconds = asyncio.run(loop(sink.port, messages, connections))
            if sink.accepted.value != count:
                raise RuntimeError(f"the sink accepted {sink.accepted.value} of {count}")
            rates.append(count / seconds)
    finally:
        sink.stop()
    return rates[0], rates[1]


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m bench smtp_baseline")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    options, _unknown = parser.parse_known_args(argv or [])
    bare, transport = measure(options.messages, options.connections)
    ratio = transport / bare
    print(f"smtp_baseline bare messages/s={bare:.0f} connections={options.connections}")
    print(f"smtp_baseline transport messages/s={transport:.0f}")
    print(f"smtp_baseline ratio={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    run()
