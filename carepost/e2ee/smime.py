"""S/MIME (RFC 8551) for outgoing mail: sign (detached ``multipart/signed``),
encrypt (``application/pkcs7-mime; smime-type=enveloped-data``), or both, in
the order RFC 8551 section 3.7 recommends: sign, then encrypt.

Built on ``cryptography``'s PKCS#7 builders (no other S/MIME library):

- signatures: CMS SignedData, SHA-256, the tenant's certificate (RSA or EC) and
  any chain certificates embedded, detached over the canonical entity;
- enveloped data: AES-256-CBC content encryption (the strongest
  ``PKCS7EnvelopeBuilder`` offers: AES-128/256-CBC; it has no AES-GCM
  AuthEnvelopedData) with the content key wrapped for each recipient by RSA
  (PKCS#1 v1.5 key transport, the one the builder offers; RFC 8551 section 2.3
  lists it as a MUST). EC recipients (ECDH key agreement) are refused.

The outer header keeps From, To, Subject, Date, Message-ID and the other
envelope fields of the input (see :mod:`carepost.e2ee.entity`); the result is
the bytes for SMTP DATA (CRLF), never parsed again so the signature holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from carepost.e2ee.certificates import check_certificate
from carepost.e2ee.entity import assemble, base64_lines, new_boundary, split_message
from carepost.e2ee.errors import ProtectionFailed

SIGNED_PREAMBLE = b"This is an S/MIME signed message\r\n"
CONTENT_ENCRYPTION = "aes-256-cbc"
DIGEST = "sha-256"


@dataclass(frozen=True)
class SmimeSigner:
    """The tenant's signing identity: certificate, private key, chain to embed."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class Recipient:
    address: str
    certificate: x509.Certificate


def load_signer(
    certificate_pem: bytes, private_key_pem: bytes, chain_pem: bytes = b""
) -> SmimeSigner:
    """A signer from PEM text (the private key unencrypted: it comes sealed from the
    directory and is opened only in memory)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ProtectionFailed("the signing key must be RSA or EC")
    chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem.strip() else ()
    return SmimeSigner(x509.load_pem_x509_certificate(certificate_pem), key, chain)


def signed_entity(entity: bytes, signer: SmimeSigner) -> bytes:
    """``multipart/signed`` over ``entity`` (RFC 8551 section 3.5.3), as an entity."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(entity)
    builder = builder.add_signer(signer.certificate, signer.private_key, hashes.SHA256())
    for certificate in signer.chain:
        builder = builder.add_certificate(certificate)
    # Binary: the entity is already canonical (CRLF); signing it as given keeps it byte for byte.
    signature = builder.sign(
        serialization.Encoding.DER,
        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
    )
    boundary = new_boundary()
    body = (
        SIGNED_PREAMBLE
        + f"--{boundary}\r\n".encode()
        + entity
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        + b"\r\n"
        + base64_lines(signature)
        + f"--{boundary}--\r\n".encode()
    )
    content_type = (
        'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
        f' micalg={DIGEST}; boundary="{boundary}"'
    )
    return assemble(b"", [content_type], body)


def enveloped_body(entity: bytes, certificates: Sequence[x509.Certificate]) -> bytes:
    """The DER EnvelopedData of ``entity`` for every certificate."""
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(entity)
    builder = builder.set_content_encryption_algorithm(algorithms.AES256)
    for certificate in certificates:
        builder = builder.add_recipient(certificate)
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def protect(
    message: EmailMessage,
    *,
    signer: SmimeSigner | None,
    recipients: Sequence[Recipient],
    now: datetime,
    encrypt_to_sender: bool = True,
) -> bytes:
    """The message signed by ``signer`` (when given) and encrypted for ``recipients``
    (when any), as SMTP DATA bytes. Every recipient certificate is checked first
    (validity, usage, address, key strength): one bad certificate fails the whole
    message, never a silent send to fewer people."""
    if signer is None and not recipients:
        raise ProtectionFailed("nothing to do: neither a signer nor a recipient")
    for index, recipient in enumerate(recipients):
        check_certificate(
            recipient.certificate,
            recipient.address,
            now,
            "encrypt",
            field=f"recipients/{index}/certificate",
        )
    if signer is not None:
        check_certificate(signer.certificate, None, now, "sign", field="signer")
    headers, entity = split_message(message)
    if signer is not None:
        entity = signed_entity(entity, signer)
    if not recipients:
        head, _, body = entity.partition(b"\r\n\r\n")
        return assemble(headers, head.decode("ascii").split("\r\n"), body)
    certificates = [r.certificate for r in recipients]
    if (
        encrypt_to_sender
        and signer is not None
        and isinstance(signer.certificate.public_key(), rsa.RSAPublicKey)
    ):
        # The sender can read what it sent (a copy kept or bounced back).
        certificates.append(signer.certificate)
    envelope = enveloped_body(entity, certificates)
    return assemble(
        headers,
        [
            'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="smime.p7m"',
        ],
        base64_lines(envelope),
    )
