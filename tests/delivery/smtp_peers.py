"""Real SMTP and DNS peers on loopback for the delivery tests (reusable by others).

* :class:`SmtpPeer`: an aiosmtpd server in a thread recording every message's exact
  bytes, the sessions it saw (and the most at once), with behaviours to misbehave on
  purpose: reject some RCPTs, greylist, stall, drop the connection mid-DATA, answer
  garbage, close a session after each message, ask for STARTTLS or AUTH; it offers
  PIPELINING (RFC 2920) unless told not to.
* :func:`self_signed_certificate`: a certificate made with ``cryptography``.
* :class:`LoopbackDns`: a tiny authoritative DNS server over UDP (dnspython's message
  handling, real DNS packets) answering from a dict, for MX tests.
* :func:`silent_listener` (accepts TCP but never greets) and :func:`closed_port`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    """One message as the server got it: envelope and the exact DATA bytes."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    session_id: int


@dataclass
class PeerBehaviour:
    """How the server misbehaves; the defaults are a well-behaved sink."""

    reject_prefix: str | None = "unknown"  # RCPT of local parts with this prefix: 550
    greylist: bool = False  # 451 to the first RCPT of each sender/recipient pair
    stall_seconds: float = 0.0  # sleep before answering the end of DATA
    data_delay: float = 0.0  # a slow but well-behaved server
    drop_in_data: bool = False  # close the connection instead of answering DATA
    garbage_on_mail: bool = False  # answer MAIL with a line that is not SMTP
    close_after_message: bool = False  # close the session after each message
    reply_421_on_reused: bool = False  # 421 to a MAIL after the first in a session
    data_reply: str = "250 2.0.0 Ok: queued"
    pipelining: bool = True  # offer PIPELINING (RFC 2920), as Postfix and most MTAs do


class PeerState:
    """What the server saw, shared between its sessions (guarded by a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.active = 0
        self.max_active = 0
        self.sessions = 0
        self.greylisted: set[tuple[str, str]] = set()
        self.transactions: dict[int, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.max_active = self.active
            self.sessions = 0


class RecordingSMTP(SMTP):
    """aiosmtpd's server, counting sessions (a STARTTLS upgrade is the same session)."""

    state: PeerState

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:
            with self.state.lock:
                self.state.active += 1
                self.state.sessions += 1
                self.state.max_active = max(self.state.max_active, self.state.active)
            self._counted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            with self.state.lock:
                self.state.active -= 1
        super().connection_lost(error)


class BrokenTlsSMTP(RecordingSMTP):
    """Says yes to STARTTLS, then sends bytes that are no TLS handshake."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("220 Ready to start TLS")
        assert self.transport is not None
        self.transport.write(b"this is not a TLS handshake\r\n" * 20)


class RecordingHandler:
    def __init__(self, state: PeerState, behaviour: PeerBehaviour) -> None:
        self.state = state
        self.behaviour = behaviour

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a handler with this hook
        if self.behaviour.pipelining:  # aiosmtpd reads commands in turn: it pipelines
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        key = id(session)
        done = self.state.transactions.get(key, 0)
        if self.behaviour.garbage_on_mail:
            return "HELLO? I am not an SMTP server \x01"
        if self.behaviour.reply_421_on_reused and done >= 1:
            return "421 4.4.2 Too many messages on one connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        prefix = self.behaviour.reject_prefix
        if prefix and address.startswith(prefix):
            return "550 5.1.1 No such user here"
        if self.behaviour.greylist:
            pair = (str(envelope.mail_from), address)
            with self.state.lock:
                first = pair not in self.state.greylisted
                self.state.greylisted.add(pair)
            if first:
                return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        behaviour = self.behaviour
        if behaviour.drop_in_data:
            assert server.transport is not None
            server.transport.abort()
            return "250 never sent"
        if behaviour.stall_seconds:
            await asyncio.sleep(behaviour.stall_seconds)
        if behaviour.data_delay:
            await asyncio.sleep(behaviour.data_delay)
        key = id(session)
        with self.state.lock:
            self.state.transactions[key] = self.state.transactions.get(key, 0) + 1
            self.state.messages.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or b""),
                    mail_options=list(envelope.mail_options),
                    tls=session.ssl is not None,
                    session_id=key,
                )
            )
        if behaviour.close_after_message:
            transport = server.transport
            assert transport is not None
            asyncio.get_running_loop().call_later(0.02, transport.close)
        return behaviour.data_reply


class PeerController(Controller):
    """A Controller on a free port (port 0), with our server class."""

    def __init__(self, *args: Any, server_class: type[RecordingSMTP], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = server_class

    def factory(self) -> SMTP:
        return self.server_class(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpPeer:
    """A running server: its address, what it saw, and how it behaves (changeable)."""

    host: str
    port: int
    state: PeerState
    behaviour: PeerBehaviour
    controller: PeerController = field(repr=False)

    @property
    def messages(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.messages)

    def stop(self) -> None:
        self.controller.stop()


def start_peer(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    behaviour: PeerBehaviour | None = None,
    tls_context: ssl.SSLContext | None = None,
    require_starttls: bool = False,
    implicit_tls: bool = False,
    credentials: tuple[str, str] | None = None,
    broken_tls: bool = False,
) -> SmtpPeer:
    """Start an aiosmtpd server on loopback; stop it with ``peer.stop()``."""
    state = PeerState()
    chosen = behaviour or PeerBehaviour()
    handler = RecordingHandler(state, chosen)
    server_class = type(
        "PeerSMTP", (BrokenTlsSMTP if broken_tls else RecordingSMTP,), {"state": state}
    )
    kwargs: dict[str, Any] = {"hostname": host, "port": port, "server_class": server_class}
    if implicit_tls:
        kwargs["ssl_context"] = tls_context
    elif tls_context is not None:
        kwargs["tls_context"] = tls_context
        kwargs["require_starttls"] = require_starttls
    if credentials is not None:
        user, password = credentials

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False)

        kwargs["authenticator"] = authenticate
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = tls_context is not None
    controller = PeerController(handler, **kwargs)
    controller.start()
    state.reset()  # forget the controller's own start-up connection
    return SmtpPeer(host, controller.port, state, chosen, controller)


@contextmanager
def running_peer(**kwargs: Any) -> Iterator[SmtpPeer]:
    peer = start_peer(**kwargs)
    try:
        yield peer
    finally:
        peer.stop()


def self_signed_certificate(directory: Path, names: tuple[str, ...] = ("localhost",)) -> Path:
    """Write ``cert.pem`` and ``key.pem`` (P-256) for ``names`` and 127.0.0.1 into
    ``directory``; returns the certificate's path (also its own CA file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    alternative = [x509.DNSName(name) for name in names]
    alternative.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path


def server_tls_context(cert_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, cert_path.parent / "key.pem")
    return context


class LoopbackDns:
    """An authoritative DNS server on 127.0.0.1 (UDP) answering from ``records``:
    ``{"example.test": {"MX": ["10 mx1.example.test."]}, "mx1.example.test": {"A":
    ["127.0.0.2"]}}``. Unknown names get NXDOMAIN, known names without the type an
    empty answer (NOERROR), names in ``servfail`` SERVFAIL."""

    def __init__(self, records: dict[str, dict[str, list[str]]], servfail: set[str] = set()):  # noqa: B006
        self.records = {name.lower().rstrip("."): kinds for name, kinds in records.items()}
        self.servfail = {name.lower().rstrip(".") for name in servfail}
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.sock.sendto(self.answer(wire), client)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif self.records[name].get(kind):
            response.answer.append(
                dns.rrset.from_text(question.name, 60, "IN", kind, *self.records[name][kind])
            )
        return response.to_wire()


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def silent_listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) but never says a word."""
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(16)
        yield listener.getsockname()[1]
