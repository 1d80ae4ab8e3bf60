"""DANE-TA (TLSA usage 2, RFC 7671 section 5.2.2 / RFC 7672): the record designates a
trust anchor that the server must send, its certificate must chain to that anchor
(each signed by the next, within their dates) and carry the MX host's name; DANE-EE
(usage 3) keeps matching the server's own certificate. Chains are generated here
with ``cryptography``; one test reads the chain from a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from carepost.delivery import dane

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def issue(
    name: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    dns_names: tuple[str, ...] = (),
    not_after: dt.datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=2))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(certificate, key)


def chain_of(mx: str = "mx.clinic.example"):
    root = issue("Clinic Root CA", ca=True)
    intermediate = issue("Clinic Issuing CA", root, ca=True)
    leaf = issue(mx, intermediate, dns_names=(mx,))
    return root, intermediate, leaf


def test_dane_ta_matches_a_root_or_intermediate_the_server_sends():
    root, intermediate, leaf = chain_of()
    chain = [leaf.der, intermediate.der, root.der]
    for anchor in (root, intermediate):
        for selector in (0, 1):
            for matching in (0, 1, 2):
                record = dane.record_for(anchor.der, 2, selector, matching)
                assert dane.verify([record], chain, names=("mx.clinic.example",))


def test_dane_ta_needs_the_anchor_in_the_chain_sent():
    root, intermediate, leaf = chain_of()
    record = dane.record_for(root.der, 2, 1, 1)
    # The server left its root out: RFC 7671 says it must send the anchor.
    assert not dane.verify([record], [leaf.der, intermediate.der])
    assert not dane.verify([record], [leaf.der])


def test_dane_ta_refuses_an_anchor_the_leaf_does_not_chain_to():
    root, intermediate, leaf = chain_of()
    stranger = issue("Someone Else's CA", ca=True)
    forged = issue("mx.clinic.example", stranger, dns_names=("mx.clinic.example",))
    record = dane.record_for(root.der, 2, 0, 1)
    # The real anchor appended after a leaf another CA signed: no chain between them.
    assert not dane.verify([record], [forged.der, intermediate.der, root.der])
    # Intermediate missing in between: the leaf is not signed by the root directly.
    assert not dane.verify([record], [leaf.der, root.der])


def test_dane_ta_checks_the_mx_name_and_the_dates_below_the_anchor():
    root, intermediate, _leaf = chain_of()
    record = dane.record_for(root.der, 2, 1, 1)
    wrong_name = issue("mail.other.example", intermediate, dns_names=("mail.other.example",))
    chain = [wrong_name.der, intermediate.der, root.der]
    assert not dane.verify([record], chain, names=("mx.clinic.example",))
    wildcard = issue("*.clinic.example", intermediate, dns_names=("*.clinic.example",))
    assert dane.verify([record], [wildcard.der, intermediate.der, root.der],
                       names=("mx.clinic.example",))  # fmt: skip
    expired = issue(
        "mx.clinic.example", intermediate, dns_names=("mx.clinic.example",),
        not_after=NOW - dt.timedelta(days=1),
    )  # fmt: skip
    assert not dane.verify([record], [expired.der, intermediate.der, root.der])


def test_dane_ee_still_ignores_names_and_dates():
    root, intermediate, _leaf = chain_of()
    expired = issue(
        "whatever", intermediate, dns_names=("whatever.example",),
        not_after=NOW - dt.timedelta(days=1),
    )  # fmt: skip
    record = dane.record_for(expired.der, 3, 1, 1)
    assert dane.verify([record], [expired.der], names=("mx.clinic.example",))
    # A DANE-EE record of the anchor designates no server certificate.
    assert not dane.verify([dane.record_for(root.der, 3, 1, 1)], [expired.der, root.der])


def _pem(*issued: Issued) -> bytes:
    return b"".join(i.certificate.public_bytes(serialization.Encoding.PEM) for i in issued)


def test_peer_chain_reads_the_chain_a_real_server_sends(tmp_path: Path):
    root, intermediate, leaf = chain_of("localhost")
    (tmp_path / "chain.pem").write_bytes(_pem(leaf, intermediate, root))
    (tmp_path / "key.pem").write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE  # DANE, not PKIX, decides
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        sent = dane.peer_chain(tls)
        record = dane.record_for(root.der, 2, 1, 1)
        assert sent == [leaf.der, intermediate.der, root.der]
        assert dane.verify_connection([record], tls, "localhost")
        assert not dane.verify_connection([record], tls, "mx.other.example")
        tls.send(b"x")
    thread.join(5)
    listener.close()
