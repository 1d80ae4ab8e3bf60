"""Fixtures of the gateway tests: a real gateway (aiosmtpd, STARTTLS with a certificate
made by ``cryptography``) on loopback, and clients of a tenant to relay as."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from carepost.audit.service import Actor
from carepost.core.runtime import Runtime
from carepost.gateway import service
from carepost.gateway.server import GatewayController, gateway_controller
from tests.delivery.smtp_peers import self_signed_certificate
from tests.environment import free_port

ADMIN = Actor("system", "tests", "gateway tests")


@dataclass
class Gateway:
    runtime: Runtime
    controller: GatewayController
    cert: Path

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def connect(self, *, tls: bool = True, client_cert: Path | None = None) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        smtp.ehlo("mail.clinic.example")
        if tls:
            context = ssl.create_default_context(cafile=str(self.cert))
            context.check_hostname = False
            if client_cert is not None:
                context.load_cert_chain(client_cert, client_cert.parent / "key.pem")
            smtp.starttls(context=context)
            smtp.ehlo("mail.clinic.example")
        return smtp


@pytest.fixture
def gateway_cert(tmp_path: Path) -> Path:
    directory = tmp_path / "server"
    directory.mkdir()
    return self_signed_certificate(directory, names=("localhost", "gateway.carepost.test"))


@pytest.fixture
def gateway(runtime: Runtime, gateway_cert: Path, tmp_path: Path) -> Iterator[Gateway]:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    client_cert = self_signed_certificate(client_dir, names=("mail.clinic.example",))
    settings = runtime.settings.model_copy(
        update={
            "gateway_tls_cert_file": gateway_cert,
            "gateway_tls_key_file": gateway_cert.parent / "key.pem",
            "gateway_client_ca_file": client_cert,
            "gateway_max_message_bytes": 256 * 1024,
        }
    )
    own = Runtime(settings, runtime.database, runtime.keyring)
    controller = gateway_controller(own, host="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield Gateway(own, controller, gateway_cert)
    finally:
        controller.stop()


@pytest.fixture
def client_cert(tmp_path: Path) -> Path:
    return tmp_path / "client" / "cert.pem"


@dataclass
class Credentials:
    client_id: str
    username: str
    secret: str


@pytest.fixture
def make_client(runtime: Runtime) -> Iterator[Callable[..., Credentials]]:
    """Clients made here are deleted after the test: a client identified by its network
    (loopback) would otherwise be every later test's client."""
    made: list[tuple[object, str]] = []

    def make(tenant, **overrides) -> Credentials:
        arguments = {
            "name": "Clinic Exchange",
            "sender_domains": ["clinic.example"],
            "max_message_bytes": 128 * 1024,
            "max_recipients": 5,
            "actor": ADMIN,
        } | overrides
        with runtime.database.session() as session:
            client, secret = service.create_client(session, tenant[0].id, **arguments)
            made.append((tenant[0].id, str(client.id)))
            return Credentials(str(client.id), client.username, secret)

    yield make
    with runtime.database.session() as session:
        for tenant_id, client_id in made:
            service.delete_client(session, tenant_id, uuid.UUID(client_id), actor=ADMIN)


# The outbox's delivery fixtures (a loopback receiver, a runtime delivering to it).
from tests.messages.conftest import delivering, empty_queue, smtp_sink  # noqa: E402, F401
