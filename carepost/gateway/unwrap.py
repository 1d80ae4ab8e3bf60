"""Opening an inbound secure reply: decrypt it with the organization's own keys and
check the signature inside, with no cryptography written here.

* S/MIME (RFC 8551): ``application/pkcs7-mime; smime-type=enveloped-data``, opened
  with ``cryptography``'s ``pkcs7_decrypt_der`` and the organization's S/MIME
  certificates and keys (RSA key transport: what ``cryptography`` decrypts). A
  ``multipart/signed`` (or opaque signed-data) entity inside is checked with
  ``openssl cms -verify`` (:func:`carepost.gateway.keys.signature_problem`); the
  signer is the SHA-256 fingerprint of the first certificate in the signature.
* OpenPGP (RFC 3156): ``multipart/encrypted; protocol="application/pgp-encrypted"``,
  opened with pysequoia and the organization's OpenPGP keys; a signature inside the
  encrypted message is verified against the sender's keys from the key directory or
  an ``Autocrypt`` header of the reply.

:func:`open_reply` returns the message to hand to the organization's mail server:
the reply's own header fields (From, To, Subject, Date, ...; any ``X-Carepost-*``
dropped so that nobody outside can forge them) over the decrypted entity, with
``X-Carepost-Reply-*`` fields saying what was done. A reply that cannot be
decrypted is returned as it came with a note field: it is never dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message as MimeMessage
from email.parser import BytesParser

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from carepost.e2ee.smime import SmimeSigner
from carepost.gateway.keys import signature_problem, smime_signed
from carepost.gateway.raw import _split

_ENVELOPED = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_DROPPED_OUTER = re.compile(
    rb"^(content-[a-z-]*|mime-version|x-carepost-[a-z-]*)\s*:", re.IGNORECASE
)
_OWN = re.compile(rb"^x-carepost-[a-z-]*\s*:", re.IGNORECASE)
_BARE_LF = re.compile(rb"(?<!\r)\n")

PgpCerts = Callable[[], Sequence[pysequoia.Cert]]


@dataclass(frozen=True)
class Opened:
    """What was done to one reply, and the bytes for the organization's server."""

    data: bytes
    method: str  # smime, openpgp, none
    decrypted: bool
    signature: str  # valid, bad, unknown_key, unchecked, none, "" (not decrypted)
    signer_fingerprint: str = ""
    note: str = ""  # why it was not decrypted (no PHI)
    inner: bytes = b""  # the reply with its entity decrypted, for key discovery


def _parse(data: bytes) -> MimeMessage:
    return BytesParser(policy=policy.compat32).parsebytes(data)


def method_of(parsed: MimeMessage) -> str:
    """``smime``, ``openpgp`` or ``none``: how the reply says it is encrypted."""
    content_type = parsed.get_content_type()
    if content_type in _ENVELOPED:
        smime_type = str(parsed.get_param("smime-type", "")).lower()
        if smime_type in ("enveloped-data", "authenveloped-data", ""):
            return "smime"
    if content_type == "multipart/encrypted":
        protocol = str(parsed.get_param("protocol", "")).lower()
        if protocol == "application/pgp-encrypted":
            return "openpgp"
    return "none"


def _crlf(data: bytes) -> bytes:
    return _BARE_LF.sub(b"\r\n", data)


def _outer_fields(raw: bytes) -> list[bytes]:
    fields, _rest = _split(raw)
    return [f for f in fields if not _DROPPED_OUTER.match(f)]


def _assemble(raw: bytes, entity: bytes, notes: list[str]) -> bytes:
    """The reply's header fields over ``entity`` (which brings its own Content-*)."""
    entity = _crlf(entity)
    head = [n.encode("ascii") for n in notes] + _outer_fields(raw)
    return b"\r\n".join([*head, b"MIME-Version: 1.0"]) + b"\r\n" + entity


def _as_received(raw: bytes, notes: list[str]) -> bytes:
    fields, rest = _split(raw)
    kept = [f for f in fields if not _OWN.match(f)]
    return b"\r\n".join([n.encode("ascii") for n in notes] + kept) + b"\r\n" + rest


def _smime_decrypt(parsed: MimeMessage, keys: Sequence[SmimeSigner]) -> bytes | None:
    payload = parsed.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return None
    for key in keys:
        if not isinstance(key.private_key, rsa.RSAPrivateKey):
            continue  # cryptography decrypts RSA key transport only
        try:
            return pkcs7.pkcs7_decrypt_der(payload, key.certificate, key.private_key, [])
        except ValueError:
            continue
    return None


def _smime_signer(entity: bytes) -> str:
    """The SHA-256 fingerprint of the first certificate in the entity's signature."""
    parsed = _parse(entity)
    for part in parsed.walk():
        content_type = part.get_content_type()
        if content_type in ("application/pkcs7-signature", "application/x-pkcs7-signature") or (
            content_type in _ENVELOPED
            and str(part.get_param("smime-type", "")).lower() == "signed-data"
        ):
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            try:
                certificates: list[x509.Certificate] = pkcs7.load_der_pkcs7_certificates(payload)
            except ValueError:
                continue
            if certificates:
                return hashlib.sha256(certificates[0].public_bytes(Encoding.DER)).hexdigest()
    return ""


def _pgp_armored(parsed: MimeMessage) -> bytes | None:
    parts = parsed.get_payload()
    if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[1], MimeMessage):
        return None
    body = parts[1].get_payload(decode=True)
    return body if isinstance(body, bytes) and body else None


class _SenderStore:
    """pysequoia's certificate store callback: records that a signature was met and
    answers with the sender's certificates (looked up once)."""

    def __init__(self, sender_certs: PgpCerts) -> None:
        self.sender_certs = sender_certs
        self.asked = False
        self.known: list[pysequoia.Cert] = []

    def __call__(self, ids: list[str]) -> list[pysequoia.Cert]:
        if not self.asked:
            self.known.extend(self.sender_certs())
        self.asked = True
        return self.known


def _pgp_decrypt_with(
    armored: bytes, key: pysequoia.Tsk, sender_certs: PgpCerts
) -> tuple[bytes, str, str] | None:
    store = _SenderStore(sender_certs)
    try:
        decrypted = pysequoia.decrypt(armored, decryptor=key.decryptor(), store=store)
    except RuntimeError as error:
        if not store.asked:
            return None  # not this key (or not a message at all)
        # Decrypted, but signed by no key we hold for the sender, or not validly; or
        # signed inside a compressed layer, which pysequoia's verifier does not read
        # (GnuPG compresses by default): then the signature is "unchecked".
        try:
            plain = pysequoia.decrypt(armored, decryptor=key.decryptor())
        except RuntimeError:
            return None
        if plain.bytes is None:
            return None
        if "unexpected message structure" in str(error).lower():
            signature = "unchecked"
        else:
            signature = "bad" if store.known else "unknown_key"
        return bytes(plain.bytes), signature, ""
    if decrypted.bytes is None:
        return None
    if not store.asked:
        return bytes(decrypted.bytes), "none", ""
    signer = str(decrypted.valid_sigs[0].certificate).upper() if decrypted.valid_sigs else ""
    return bytes(decrypted.bytes), "valid" if signer else "bad", signer


def _pgp_decrypt(
    armored: bytes, keys: Sequence[pysequoia.Tsk], sender_certs: PgpCerts
) -> tuple[bytes, str, str] | None:
    """(plaintext, signature, signer fingerprint), or None when no key opens it."""
    for key in keys:
        opened = _pgp_decrypt_with(armored, key, sender_certs)
        if opened is not None:
            return opened
    return None


def autocrypt_certs(raw: bytes, sender: str) -> list[pysequoia.Cert]:
    """The OpenPGP certificates an ``Autocrypt`` header of the reply offers for the
    sender (Autocrypt 1.1 section 2.1)."""
    found: list[pysequoia.Cert] = []
    for header in _parse(raw).get_all("Autocrypt", []) or []:
        attributes = dict(
            item.strip().partition("=")[::2] for item in str(header).split(";") if "=" in item
        )
        if attributes.get("addr", "").strip().lower() != sender.lower():
            continue
        try:
            found.append(
                pysequoia.Cert.from_bytes(
                    base64.b64decode("".join(attributes.get("keydata", "").split()))
                )
            )
        except (binascii.Error, ValueError, RuntimeError):
            continue
    return found


def open_reply(
    raw: bytes,
    *,
    smime_keys: Sequence[SmimeSigner],
    pgp_keys: Sequence[pysequoia.Tsk],
    sender_certs: PgpCerts,
) -> Opened:
    """Decrypt and check one reply (see the module's docstring). Never raises for what
    the reply holds: whatever cannot be opened is forwarded as received, noted."""
    try:
        parsed = _parse(raw)
        method = method_of(parsed)
    except Exception:  # noqa: BLE001 - an unparsable reply is still forwarded
        method, parsed = "none", None
    if method == "none" or parsed is None:
        note = "X-Carepost-Reply: not-encrypted; forwarded as received"
        return Opened(_as_received(raw, [note]), "none", False, "", note="not_encrypted")
    entity: bytes | None = None
    signature, signer = "none", ""
    try:
        if method == "smime":
            entity = _smime_decrypt(parsed, smime_keys)
            if entity is not None and smime_signed(_parse(entity)):
                problem = signature_problem(_crlf(entity))
                signature = "valid" if problem is None else "bad"
                signer = _smime_signer(entity) if problem is None else ""
        else:
            armored = _pgp_armored(parsed)
            opened = _pgp_decrypt(armored, pgp_keys, sender_certs) if armored else None
            if opened is not None:
                entity, signature, signer = opened
    except Exception:  # noqa: BLE001 - a broken envelope is forwarded as received
        entity = None
    if entity is None:
        note = (
            f"X-Carepost-Reply: not-decrypted; method={method}; "
            "reason=no-matching-organization-key; forwarded as received"
        )
        return Opened(_as_received(raw, [note]), method, False, "", note="no_matching_key")
    notes = [f"X-Carepost-Reply: decrypted; method={method}"]
    notes.append(
        f"X-Carepost-Reply-Signature: {signature}" + (f"; signer={signer}" if signer else "")
    )
    data = _assemble(raw, entity, notes)
    return Opened(data, method, True, signature, signer, inner=_assemble(raw, entity, []))
