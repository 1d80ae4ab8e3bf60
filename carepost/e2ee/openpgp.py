"""OpenPGP PGP/MIME (RFC 3156) for outgoing mail, with pysequoia (Sequoia-PGP).

- Encrypted (and signed): ``multipart/encrypted; protocol="application/pgp-encrypted"``
  holding one OpenPGP message that is encrypted for every recipient and signed
  inside by the tenant's key (the combined form of RFC 3156 section 6.2).
- Signed only: ``multipart/signed; protocol="application/pgp-signature"`` with a
  detached signature over the canonical entity (RFC 3156 section 5).

Why pysequoia: it is maintained (releases through 2026), ships manylinux wheels
(no gpg binary, no keyring directory, no agent: every operation is in memory on
the key material given), and is typed. PGPy's last release is from 2022 and does
not support Python 3.13; python-gnupg drives the gpg binary through a keyring
directory, which would put tenants' secret keys on disk outside carepost's
envelope encryption for the time of each operation.

Recipient keys are checked before use (:func:`check_cert`): not revoked, not
expired at the time asked, and carrying a User ID with the recipient's address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr

import pysequoia
from pysequoia.packet import HashAlgorithm

from carepost.e2ee.certificates import normalize_address
from carepost.e2ee.entity import CRLF, assemble, new_boundary, split_message
from carepost.e2ee.errors import KeyRejected, ProtectionFailed

ENCRYPTED_PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 3156)\r\n"
SIGNED_PREAMBLE = b"This is an OpenPGP/MIME signed message (RFC 3156)\r\n"
# RFC 3156 section 5 micalg names (the binding's enum values are not hashable).
MICALG = (
    (HashAlgorithm.SHA256, "pgp-sha256"),
    (HashAlgorithm.SHA384, "pgp-sha384"),
    (HashAlgorithm.SHA512, "pgp-sha512"),
    (HashAlgorithm.SHA224, "pgp-sha224"),
)


@dataclass(frozen=True)
class CertInfo:
    """What the key directory records about an OpenPGP certificate."""

    fingerprint: str  # upper-case hex, as gpg prints it
    addresses: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    revoked: bool
    algorithm: str


@dataclass(frozen=True)
class PgpRecipient:
    address: str
    cert: pysequoia.Cert


def load_cert(data: bytes | str, *, field: str = "key") -> pysequoia.Cert:
    """One public certificate from armored or binary data, or KeyRejected naming ``field``."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if b"PRIVATE KEY BLOCK" in raw:
        # Refused rather than stripped: whoever sent it should know it was exposed.
        raise KeyRejected("this is a secret key: send only the public key", field=field)
    try:
        # Keeps only public material even from binary secret key data.
        return pysequoia.Cert.from_bytes(raw)
    except Exception:  # noqa: BLE001 - the binding raises plain exceptions for bad input
        raise KeyRejected(
            "not an OpenPGP public key (ASCII-armored or binary)", field=field
        ) from None


def cert_addresses(cert: pysequoia.Cert) -> tuple[str, ...]:
    addresses = []
    for user_id in cert.user_ids:
        _name, address = parseaddr(str(user_id))
        if "@" in address:
            addresses.append(normalize_address(address))
    return tuple(addresses)


def describe_cert(cert: pysequoia.Cert) -> CertInfo:
    return CertInfo(
        fingerprint=cert.fingerprint.upper(),
        addresses=cert_addresses(cert),
        not_before=None,
        not_after=cert.expiration,
        revoked=cert.is_revoked,
        algorithm="openpgp",
    )


def check_cert(
    cert: pysequoia.Cert, address: str | None, now: datetime, *, field: str = "key"
) -> CertInfo:
    """The certificate's facts if it may be used for ``address`` at ``now``."""
    info = describe_cert(cert)
    if info.revoked:
        raise KeyRejected("the key is revoked", field=field)
    if info.not_after is not None and now >= info.not_after:
        raise KeyRejected("the key has expired", field=field)
    if address is not None and normalize_address(address) not in info.addresses:
        raise KeyRejected("the address is not among the key's User IDs", field="address")
    return info


def _signed_entity(entity: bytes, signer: pysequoia.Tsk) -> bytes:
    signature = pysequoia.sign(signer.signer(), entity, mode=pysequoia.SignatureMode.DETACHED)
    used = pysequoia.Sig.from_bytes(signature).hash_algorithm
    micalg = next((name for algorithm, name in MICALG if algorithm == used), None)
    if micalg is None:
        raise ProtectionFailed("the signing key chose a hash that RFC 3156 mail cannot name")
    boundary = new_boundary()
    body = (
        SIGNED_PREAMBLE
        + f"--{boundary}\r\n".encode()
        + entity
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
        + b"Content-Description: OpenPGP digital signature\r\n"
        + b'Content-Disposition: attachment; filename="signature.asc"\r\n'
        + b"\r\n"
        + _crlf(signature)
        + f"--{boundary}--\r\n".encode()
    )
    content_type = (
        'Content-Type: multipart/signed; protocol="application/pgp-signature";\r\n'
        f' micalg={micalg}; boundary="{boundary}"'
    )
    return assemble(b"", [content_type], body)


def _crlf(armored: bytes) -> bytes:
    lines = armored.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    return b"".join(line + CRLF for line in lines)


def protect(
    message: EmailMessage,
    *,
    signer: pysequoia.Tsk | None,
    recipients: Sequence[PgpRecipient],
    now: datetime,
    encrypt_to_sender: bool = True,
) -> bytes:
    """The message as PGP/MIME: encrypted for ``recipients`` (and signed inside by
    ``signer`` when given), or only signed when there are no recipients. Every
    recipient key is checked first; one bad key fails the whole message."""
    if signer is None and not recipients:
        raise ProtectionFailed("nothing to do: neither a signer nor a recipient")
    for index, recipient in enumerate(recipients):
        check_cert(recipient.cert, recipient.address, now, field=f"recipients/{index}/key")
    if signer is not None:
        check_cert(signer.extract_certificate(), None, now, field="signer")
    headers, entity = split_message(message)
    if not recipients:
        assert signer is not None
        head, _, body = _signed_entity(entity, signer).partition(b"\r\n\r\n")
        return assemble(headers, head.decode("ascii").split("\r\n"), body)
    certs = [r.cert for r in recipients]
    if encrypt_to_sender and signer is not None:
        certs.append(signer.extract_certificate())
    try:
        encrypted = pysequoia.encrypt(
            entity, recipients=certs, signer=signer.signer() if signer is not None else None
        )
    except Exception:  # noqa: BLE001 - the binding raises plain exceptions
        raise ProtectionFailed(
            "a recipient key cannot encrypt (no usable encryption subkey)"
        ) from None
    boundary = new_boundary()
    body = (
        ENCRYPTED_PREAMBLE
        + f"--{boundary}\r\n".encode()
        + b"Content-Type: application/pgp-encrypted\r\n"
        + b"Content-Description: PGP/MIME version identification\r\n"
        + b"\r\n"
        + b"Version: 1\r\n"
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        + b"Content-Description: OpenPGP encrypted message\r\n"
        + b'Content-Disposition: inline; filename="encrypted.asc"\r\n'
        + b"\r\n"
        + _crlf(encrypted)
        + f"--{boundary}--\r\n".encode()
    )
    content_type = (
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        f' boundary="{boundary}"'
    )
    return assemble(headers, [content_type], body)
