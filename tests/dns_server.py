"""A real, tiny authoritative DNS server on loopback for tests (UDP and TCP).

It serves the records a test puts in its zone (TXT, A, MX, ...) and answers
NXDOMAIN for any other name, so the DKIM verifiers and the domain checker run
their real resolvers against data the test controls, with no network.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class Zone:
    """Records by (name, type); names are absolute, case-insensitive."""

    def __init__(self) -> None:
        self.records: dict[tuple[dns.name.Name, int], list[str]] = {}
        self.lock = threading.Lock()

    def add(self, name: str, rdtype: str, *values: str) -> None:
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        with self.lock:
            self.records.setdefault(key, []).extend(values)

    def txt(self, name: str, *values: str) -> None:
        """A TXT record per value, each split in 255-octet strings as a zone file would."""
        for value in values:
            chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
            self.add(name, "TXT", " ".join('"' + c.replace('"', '\\"') + '"' for c in chunks))

    def clear(self) -> None:
        with self.lock:
            self.records.clear()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= 0x0400  # AA: we are the authority for whatever we hold
        question = query.question[0]
        with self.lock:
            values = self.records.get((question.name, question.rdtype))
            known = any(name == question.name for name, _ in self.records)
        if values:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 300, dns.rdataclass.IN, question.rdtype, values
                )
            )
        elif not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        sock.sendto(self.server.zone.answer(query).to_wire(), self.client_address)  # type: ignore[attr-defined]


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        header = self.request.recv(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        data = b""
        while len(data) < length:
            chunk = self.request.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        wire = self.server.zone.answer(dns.message.from_wire(data)).to_wire()  # type: ignore[attr-defined]
        self.request.sendall(struct.pack("!H", len(wire)) + wire)


class _UdpServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _bind_pair(host: str, port: int) -> tuple[_UdpServer, _TcpServer]:
    """UDP and TCP servers on one port. The kernel picks a free UDP port; its TCP twin
    may be taken by another socket, so a random port is tried again a few times."""
    for _attempt in range(20):
        udp = _UdpServer((host, port), _Udp)
        try:
            return udp, _TcpServer((host, udp.server_address[1]), _Tcp)
        except OSError:
            udp.server_close()
            if port:
                raise
    raise OSError("no port free for both UDP and TCP on " + host)


@contextmanager
def dns_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[Zone, str, int]]:
    """Serve a fresh zone on ``host`` (UDP and TCP on the same port); yields (zone, host, port)."""
    zone = Zone()
    udp, tcp = _bind_pair(host, port)
    bound_port = udp.server_address[1]
    udp.zone = tcp.zone = zone  # type: ignore[attr-defined]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (udp, tcp)]
    for thread in threads:
        thread.start()
    try:
        yield zone, host, bound_port
    finally:
        for server in (udp, tcp):
            server.shutdown()
            server.server_close()


@contextmanager
def app_resolving_with(app: Any) -> Iterator[Zone]:
    """Serve a zone on loopback and make ``app``'s domain DNS checks ask it."""
    from carepost.domains.api import get_dns_resolver
    from carepost.domains.checks import make_resolver

    with dns_server() as (zone, host, port):
        app.dependency_overrides[get_dns_resolver] = lambda: make_resolver(
            [f"{host}:{port}"], timeout=3
        )
        try:
            yield zone
        finally:
            app.dependency_overrides.pop(get_dns_resolver, None)
