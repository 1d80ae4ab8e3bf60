"""``carepost gateway add`` and ``carepost gateway serve`` as an operator runs them: a
client made on the command line relays through a gateway process over STARTTLS."""

from __future__ import annotations

import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

from sqlalchemy import select

from carepost.messages.models import Message
from tests.delivery.smtp_peers import self_signed_certificate
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


def test_gateway_add_and_serve(settings, runtime, tenant, tmp_path):
    environment = child_environment(settings)
    added = subprocess.run(
        carepost_command(
            "gateway",
            "add",
            "--tenant",
            tenant[0].slug,
            "--name",
            "Postfix",
            "--domain",
            "clinic.example",
        ),
        env=environment,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    username = re.search(r"username: (\S+)", added.stdout).group(1)
    secret = re.search(r"secret:\s+(\S+)", added.stdout).group(1)
    listed = subprocess.run(
        carepost_command("gateway", "list", "--tenant", tenant[0].slug),
        env=environment | {"COLUMNS": "250"},
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert username in listed.stdout and secret not in listed.stdout

    cert = self_signed_certificate(tmp_path)
    port = free_port()
    log = tmp_path / "gateway.out"
    environment |= {
        "CAREPOST_GATEWAY_TLS_CERT_FILE": str(cert),
        "CAREPOST_GATEWAY_TLS_KEY_FILE": str(tmp_path / "key.pem"),
    }
    with log.open("w") as output:
        server = subprocess.Popen(
            carepost_command("gateway", "serve", "--port", str(port)),
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(port, server, log)
        context = ssl.create_default_context(cafile=str(cert))
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.login(username, secret)
            try:
                smtp.sendmail(
                    "care@clinic.example",
                    ["pat@example.org"],
                    b"From: care@clinic.example\r\nSubject: hi\r\n\r\nhello\r\n",
                )
            except smtplib.SMTPException as error:
                raise AssertionError(log.read_text()) from error
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()
    with runtime.database.session() as session:
        states = session.scalars(
            select(Message.state).where(
                Message.tenant_id == tenant[0].id, Message.created_by_type == "gateway"
            )
        ).all()
    assert states == ["queued"]
