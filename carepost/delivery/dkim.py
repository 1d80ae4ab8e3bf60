"""DKIM signing of outgoing messages (RFC 6376) with dkimpy: RSA-SHA256 and
Ed25519-SHA256 (RFC 8463).

Signatures use relaxed/relaxed canonicalization (survives the header refolding
and trailing-blank changes relays make) and cover the header fields RFC 6376
section 5.4.1 recommends that carepost writes. ``From`` is signed once more than
it occurs ("oversigned", section 8.15), so a second From added on the way breaks
the signature instead of being shown to the reader.

A domain with both an RSA and an Ed25519 key signs twice (RFC 8463 section 4):
receivers that do not know Ed25519 ignore that signature and check the RSA one.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Literal

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carepost.core.errors import CarepostError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")
# RFC 6376 section 5.4.1, the ones carepost's messages carry, in signing order.
SIGNED_HEADERS = (
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "In-Reply-To",
    "References",
)


class SigningError(CarepostError):
    """The message could not be DKIM-signed (a broken key or message)."""

    code = "dkim-signing-failed"
    status = 500
    title = "DKIM signing failed"


@dataclass(frozen=True)
class DkimSigner:
    """One key a domain signs with: what :func:`sign` needs, decrypted."""

    domain: str
    selector: str
    algorithm: Algorithm
    private_key_pem: bytes = field(repr=False)

    def sign(self, data: bytes) -> bytes:
        return sign(
            data,
            domain=self.domain,
            selector=self.selector,
            private_key_pem=self.private_key_pem,
            algorithm=self.algorithm,
        )


def headers_to_sign(data: bytes) -> list[bytes]:
    """The recommended fields present in the message, with From once more (oversigned)."""
    present = {name.lower() for name in BytesHeaderParser().parsebytes(data)}
    names = [name.lower().encode() for name in SIGNED_HEADERS if name.lower() in present]
    if b"from" not in names:
        raise SigningError("the message has no From header to sign")
    return [b"from", *names]


def _dkimpy_key(private_key_pem: bytes, algorithm: Algorithm) -> bytes:
    """dkimpy takes RSA keys as PEM and Ed25519 keys as the base64 of the raw
    32-byte seed (the RFC 8463 format), so a PEM Ed25519 key is converted."""
    if algorithm == "rsa-sha256":
        return private_key_pem
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("the key is not an Ed25519 key")
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw)


def sign(
    data: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    algorithm: Algorithm,
) -> bytes:
    """``data`` with a DKIM-Signature header prepended (relaxed/relaxed, ``d=domain``)."""
    if algorithm not in ALGORITHMS:
        raise SigningError(f"unknown DKIM algorithm {algorithm!r}")
    try:
        signature = dkimpy.sign(
            data,
            selector.encode("ascii"),
            domain.encode("ascii"),
            _dkimpy_key(private_key_pem, algorithm),
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=algorithm.encode("ascii"),
            include_headers=headers_to_sign(data),
            linesep=b"\r\n",
        )
    except (dkimpy.DKIMException, ValueError) as exc:
        # The exception text describes the key or the message format, never its content.
        raise SigningError(f"DKIM signing failed: {type(exc).__name__}") from None
    return bytes(signature) + data


def sign_all(data: bytes, signers: Iterable[DkimSigner]) -> bytes:
    """``data`` signed by every signer (each signature prepended; none signs another)."""
    for signer in signers:
        data = signer.sign(data)
    return data
