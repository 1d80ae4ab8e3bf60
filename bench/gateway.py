"""Benchmark: the SMTP gateway against a bare aiosmtpd sink, same client, same run.

``python -m bench gateway --messages 2000 --connections 50`` makes a scratch database
and tenant (bench/scratch.py: SQLite, or a schema of its own in
``CAREPOST_DATABASE_URL``), a verified sending domain and a gateway client, then
sends the same N messages (about 2 KB, one recipient each) twice, from
``--connections`` smtplib clients in threads, each over its own STARTTLS connection
(the gateway's: AUTH too):

* ``sink``: a bare aiosmtpd server with the same certificate that counts and drops;
* ``gateway``: carepost's gateway, each message checked, parsed, encrypted and
  **committed** to the outbox before its 250.

Prints ``gateway sink messages/s=<n>``, ``gateway gateway messages/s=<n>`` and
``gateway ratio=<gateway/sink>`` (goal >= 0.5), each with the process's CPU
microseconds per message (clients and server share this process, so the difference
is what the gateway costs; load-independent, unlike the rates), and ``uptime``'s
load. The run fails when a count is off (the gateway's is the number of queued
outbox rows).

The messages are bench/smtp_baseline.py's (``build_messages``, imported, not
copied); its :class:`~bench.smtp_baseline.Sink` speaks no STARTTLS, so the sink here
is the same counting handler behind aiosmtpd's STARTTLS with the gateway's
certificate: the same client, TLS on both sides.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import smtplib
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from bench.scratch import scratch_tenant
from bench.served import free_port
from bench.smtp_baseline import SENDER, build_messages
from carepost.audit.service import SYSTEM
from carepost.core.runtime import Runtime
from carepost.domains.models import SendingDomain
from carepost.gateway import service
from carepost.gateway.server import gateway_controller
from carepost.messages.models import Message

# smtp_baseline's messages use reserved .test names, which the outbox refuses as
# addresses: the same messages, with these domains instead.
FROM_DOMAIN = "bench.clinic.example"
RENAMED = ((b"@sink.test", b"@example.org"), (b"bench.carepost.test", FROM_DOMAIN.encode()))
GATEWAY_SENDER = SENDER.replace("bench.carepost.test", FROM_DOMAIN)


def gateway_messages(count: int) -> list[tuple[str, bytes]]:
    """bench/smtp_baseline.py's messages, renamed (:data:`RENAMED`)."""
    messages = []
    for recipient, data in build_messages(count):
        for old, new in RENAMED:
            data = data.replace(old, new)
            recipient = recipient.replace(old.decode(), new.decode())
        messages.append((recipient, data))
    return messages


def certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway-cert.pem", directory / "gateway-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def send_all(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    connections: int,
    login: tuple[str, str] | None,
) -> float:
    """Send ``messages`` over ``connections`` STARTTLS sessions in threads; seconds."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def one_client(share: Sequence[tuple[str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.starttls(context=context)
            if login:
                smtp.login(*login)
            for recipient, data in share:
                smtp.sendmail(GATEWAY_SENDER, [recipient], data)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        for done in [pool.submit(one_client, messages[i::connections]) for i in range(connections)]:
            done.result()
    return time.perf_counter() - started


class _Counter:
    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.accepted += 1
        return "250 2.0.0 Ok"


class _SinkController(Controller):
    def __init__(self, counter: _Counter, context: ssl.SSLContext) -> None:
        super().__init__(counter, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
        self._context = context

    def factory(self) -> SMTP:
        return SMTP(
            self.handler, hostname="sink.test", tls_context=self._context, require_starttls=True
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(count: int, connections: int) -> tuple[float, float, float, float]:
    """Messages per second accepted by the bare sink and durably queued by the gateway."""
    messages = gateway_messages(count)
    with scratch_tenant() as scratch:
        cert, key = certificate(scratch.workdir)
        settings = scratch.runtime.settings.model_copy(
            update={"gateway_tls_cert_file": cert, "gateway_tls_key_file": key}
        )
        runtime = Runtime(settings, scratch.runtime.database, scratch.runtime.keyring)
        with runtime.database.session() as session:
            session.add(
                SendingDomain(
                    tenant_id=scratch.keys.tenant_id,
                    name=FROM_DOMAIN,
                    state="verified",
                    created_by_type="system",
                    created_by_id="bench",
                )
            )
            session.flush()
            client, secret = service.create_client(
                session,
                scratch.keys.tenant_id,
                name="bench",
                sender_domains=[FROM_DOMAIN],
                max_message_bytes=1024 * 1024,
                max_recipients=10,
                actor=SYSTEM,
            )
            username = client.username

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        counter = _Counter()
        sink = _SinkController(counter, context)
        sink.start()
        cpu = _cpu_seconds()
        try:
            sink_seconds = send_all(sink.port, messages, connections, None)
            sink_cpu = _cpu_seconds() - cpu
        finally:
            sink.stop()
        if counter.accepted != count:
            raise RuntimeError(f"the sink accepted {counter.accepted} of {count}")

        gateway = gateway_controller(runtime, host="127.0.0.1", port=free_port())
        gateway.start()
        cpu = _cpu_seconds()
        try:
            gateway_seconds = send_all(gateway.port, messages, connections, (username, secret))
            gateway_cpu = _cpu_seconds() - cpu
        finally:
            gateway.stop()
        with runtime.database.session() as session:
            queued = session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.created_by_type == "gateway", Message.state == "queued")
            )
        if queued != count:
            raise RuntimeError(f"the gateway queued {queued} of {count}")
    micro = 1e6 / count
    return count / sink_seconds, count / gateway_seconds, sink_cpu * micro, gateway_cpu * micro


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m bench gateway")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=50)
    options, _unknown = parser.parse_known_args(argv or [])
    sink, gateway, sink_cpu, gateway_cpu = measure(options.messages, options.connections)
    ratio = gateway / sink
    load = os.getloadavg()
    print(
        f"gateway sink messages/s={sink:.0f} cpu_us_per_message={sink_cpu:.0f} "
        f"connections={options.connections}"
    )
    print(
        f"gateway gateway messages/s={gateway:.0f} cpu_us_per_message={gateway_cpu:.0f} "
        "(durably queued)"
    )
    print(f"gateway ratio={ratio:.2f} (goal >= 0.5) load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}")
    return ratio


if __name__ == "__main__":
    run()
