"""X.509 certificates for S/MIME: parse (PEM or DER) and check that one may be
used for a recipient address (RFC 8550 section 4.4 and RFC 8551 section 2.2).

A certificate is usable for an address when, at the time asked:

- it is inside its validity period;
- its key is RSA of at least 2048 bits or EC on P-256, P-384 or P-521;
- its key usage, when present, allows the purpose (keyEncipherment to encrypt,
  digitalSignature or nonRepudiation to sign), and its extended key usage, when
  present, includes emailProtection (or anyExtendedKeyUsage);
- its subjectAltName holds the address as an rfc822Name (domains compared
  case-insensitively; RFC 8550 section 3 puts addresses there).

Errors name the check that failed and the field at fault, never the address.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from carepost.e2ee.errors import KeyRejected

Purpose = Literal["encrypt", "sign"]
MIN_RSA_BITS = 2048
EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


@dataclass(frozen=True)
class CertificateInfo:
    """What the key directory records about a certificate."""

    fingerprint: str  # SHA-256 of the DER encoding, lower-case hex
    addresses: tuple[str, ...]  # rfc822Names of the subjectAltName, normalized
    not_before: datetime
    not_after: datetime
    algorithm: str  # "rsa-2048", "ec-secp256r1"
    can_encrypt: bool  # RSA: the S/MIME builder can wrap a content key for it


def normalize_address(address: str) -> str:
    """Addresses compare case-insensitively in practice (RFC 5321 leaves the local
    part to the receiving host, and no mailbox provider distinguishes case)."""
    return address.strip().lower()


def load_certificate(data: bytes, *, field: str = "certificate") -> x509.Certificate:
    """One certificate from PEM or DER, or KeyRejected naming ``field``."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise KeyRejected("not a PEM or DER X.509 certificate", field=field) from None


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_addresses(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        normalize_address(name) for name in names.value.get_values_for_type(x509.RFC822Name)
    )


def _algorithm(certificate: x509.Certificate, field: str) -> tuple[str, bool]:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyRejected(f"RSA keys need at least {MIN_RSA_BITS} bits", field=field)
        return f"rsa-{key.key_size}", True
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            raise KeyRejected("EC keys must be on P-256, P-384 or P-521", field=field)
        return f"ec-{key.curve.name}", False
    raise KeyRejected("the key must be RSA (2048 bits or more) or EC", field=field)


def describe_certificate(
    certificate: x509.Certificate, *, field: str = "certificate"
) -> CertificateInfo:
    """The facts the directory keeps; refuses weak keys."""
    algorithm, can_encrypt = _algorithm(certificate, field)
    return CertificateInfo(
        fingerprint=hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        addresses=certificate_addresses(certificate),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        algorithm=algorithm,
        can_encrypt=can_encrypt,
    )


def _check_usage(certificate: x509.Certificate, purpose: Purpose, field: str) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None:
        if purpose == "encrypt":
            allowed = usage.key_encipherment or usage.key_agreement
        else:
            allowed = usage.digital_signature or usage.content_commitment
        if not allowed:
            raise KeyRejected(
                f"the certificate's key usage does not allow to {purpose}", field=field
            )
    try:
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        extended
    ):
        raise KeyRejected("the certificate's extended key usage lacks emailProtection", field=field)


def check_certificate(
    certificate: x509.Certificate,
    address: str | None,
    now: datetime,
    purpose: Purpose = "encrypt",
    *,
    field: str = "certificate",
    require_rsa_to_encrypt: bool = True,
) -> CertificateInfo:
    """The certificate's facts if it may be used for ``address`` at ``now``, else
    KeyRejected saying which check failed (``address`` None skips the name check).
    ``require_rsa_to_encrypt`` False lets an EC certificate through (the directory
    keeps it, marked as one carepost cannot encrypt to yet)."""
    info = describe_certificate(certificate, field=field)
    if now < info.not_before:
        raise KeyRejected("the certificate is not valid yet", field=field)
    if now > info.not_after:
        raise KeyRejected("the certificate has expired", field=field)
    _check_usage(certificate, purpose, field)
    if address is not None and normalize_address(address) not in info.addresses:
        raise KeyRejected(
            "the address is not among the certificate's subjectAltName email addresses",
            field="address",
        )
    if purpose == "encrypt" and require_rsa_to_encrypt and not info.can_encrypt:
        raise KeyRejected(
            "encrypting to EC certificates (ECDH, RFC 5753) is not supported yet; "
            "an RSA certificate is needed",
            field=field,
        )
    return info
