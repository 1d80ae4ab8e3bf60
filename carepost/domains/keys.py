"""DKIM key pairs: generation (RSA-2048, Ed25519) and the DNS TXT record that
publishes the public half (RFC 6376 section 3.6.1, RFC 8463 section 4).

The private key leaves this module as PKCS#8 PEM, to be stored encrypted; it is
never logged or returned by the API.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from carepost.delivery.dkim import Algorithm

RSA_BITS = 2048
# The k= tag of each algorithm's key record.
KEY_TYPES: dict[str, str] = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}
# RFC 1035 section 3.3.14: one character-string of a TXT record holds at most 255 octets.
TXT_STRING = 255


@dataclass(frozen=True)
class KeyPair:
    algorithm: Algorithm
    public_key: str  # the p= value: base64, no line breaks
    private_key_pem: bytes = field(repr=False)


def generate_key(algorithm: Algorithm) -> KeyPair:
    """A fresh key pair; RSA's p= is the SubjectPublicKeyInfo, Ed25519's the raw 32 bytes."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa-sha256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(algorithm, base64.b64encode(public).decode("ascii"), pem)


def key_record_value(algorithm: str, public_key: str) -> str:
    """The TXT value at ``<selector>._domainkey.<domain>``."""
    return f"v=DKIM1; k={KEY_TYPES[algorithm]}; p={public_key}"


def txt_strings(value: str) -> list[str]:
    """A TXT value split into character-strings of at most 255 octets (an RSA-2048
    record is about 410), which DNS concatenates back (RFC 7208 section 3.3 likewise)."""
    return [value[i : i + TXT_STRING] for i in range(0, len(value), TXT_STRING)] or [""]


def zone_text(value: str) -> str:
    """The value as a zone file or a DNS console takes it: quoted strings side by side."""
    return " ".join(f'"{chunk}"' for chunk in txt_strings(value))
