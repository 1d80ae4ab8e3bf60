"""``carepost inbound serve`` as an operator runs it: a process that listens, answers
SMTP, refuses relaying, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time

import aiosmtplib
import pytest

from tests.delivery.samples import fill
from tests.environment import carepost_command, child_environment, free_port


def _wait_for(port: int, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


async def _transaction(port: int, recipient: str, data: bytes) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
        await smtp.mail("")
        await smtp.rcpt(recipient)
        return (await smtp.data(data)).message


def test_inbound_serve_listens_and_stops(settings, runtime, tmp_path):
    port = free_port()
    log = tmp_path / "inbound.out"
    environment = child_environment(settings) | {"CAREPOST_BOUNCE_DOMAIN": "bounces.test.example"}
    with log.open("w") as output:
        server = subprocess.Popen(
            carepost_command("inbound", "serve", "--port", str(port)),
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(port, server, log)
        reply = asyncio.run(
            _transaction(
                port, "b-anything@bounces.test.example", fill("vacation_autoreply.eml").data
            )
        )
        assert reply.startswith("2.0.0")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            asyncio.run(_transaction(port, "someone@elsewhere.example", b"Subject: x\r\n\r\nx\r\n"))
        assert refused.value.code == 550
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0, log.read_text()
    text = log.read_text()
    assert f"listening on 127.0.0.1:{port}" in text and "inbound stopped" in text
