"""DKIM signing of outgoing messages (RFC 6376): RSA-SHA256 and Ed25519-SHA256
(RFC 8463).

The canonical forms are dkimpy's (``dkim.canonicalization.Relaxed``); the tag list,
the header selection and the hashing follow RFC 6376 sections 3.5 and 3.7 here; the
signatures are OpenSSL's, through ``cryptography``, with each key parsed once per
process. dkimpy's own ``sign`` does its RSA arithmetic in Python (about 10 ms a
signature, the worker's largest cost), so it is not called; dkimpy verifies in the
tests, with OpenDKIM and Mail::DKIM, so the output is checked independently.

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
import functools
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import Relaxed

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
        return self.header(data) + data

    def header(self, data: bytes, canonical: Canonical | None = None) -> bytes:
        """The DKIM-Signature header field this key gives ``data`` (``canonical``: its
        :class:`Canonical`, computed here when not given)."""
        return signature_header(
            data,
            domain=self.domain,
            selector=self.selector,
            private_key_pem=self.private_key_pem,
            algorithm=self.algorithm,
            canonical=canonical,
        )


# One header field: its name, then its value up to the next field (folds included).
_FIELD = re.compile(rb"^([^\s:]+)[ \t]*:(.*?)(?=\r\n[^ \t]|\Z)", re.M | re.S)
_BARE_LF = re.compile(rb"(?<!\r)\n")
FOLD_AT = 76  # keep signature lines under the 78 characters RFC 5322 recommends


def _split(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields (name, raw value) in order, and the body, of a CRLF message."""
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 4 :])
    return [(m.group(1), m.group(2)) for m in _FIELD.finditer(head)], body


_LINE_END = re.compile(rb"\r?\n")
_BLANKS = re.compile(rb"[\t ]+")


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 section 3.4.2, as dkimpy implements it (``Relaxed.canonicalize_headers``,
    the same steps): lowercase name, unfolded value, runs of blanks as one, stripped
    (without the trailing CRLF)."""
    if b"\n" in value or b"\t" in value or b"  " in value:
        value = _BLANKS.sub(b" ", _LINE_END.sub(b"", value))
    # Else nothing to unfold or collapse (most fields): the substitutions would change
    # nothing, and skipping them is most of the cost of a field.
    return name.lower().rstrip() + b":" + value.strip()


def _with_crlf(data: bytes) -> bytes:
    """``data`` with every bare LF made CRLF, as SMTP sends it. A message written by
    carepost has none: counting both is cheaper than a substitution over all of it."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 section 3.4.4, as dkimpy implements it: blanks collapsed, none at line
    ends, no empty lines at the end, a CRLF after the last line (nothing for an empty
    body)."""
    return bytes(Relaxed.canonicalize_body(body))


@dataclass(frozen=True)
class Canonical:
    """What every signature of one message shares (the message is parsed and
    canonicalized once however many keys sign it): the signed header names, the
    hash of their relaxed forms so far, and the body hash."""

    include: tuple[bytes, ...]
    headers_hash: Any = field(repr=False)  # hashlib sha256 over the relaxed fields
    body_hash: bytes

    @classmethod
    def of(cls, data: bytes) -> Canonical:
        fields, body = _split(_with_crlf(data))
        present = {name.lower() for name, _value in fields}
        signed = [name for name in _SIGNED if name in present]
        if b"from" not in signed:
            raise SigningError("the message has no From header to sign")
        include = (b"from", *signed)
        # Header fields of one name are signed from the last one up (section 5.4.2);
        # a name listed once more than it occurs adds nothing (the oversigned From).
        remaining: dict[bytes, list[bytes]] = {}
        for name, raw in fields:
            remaining.setdefault(name.lower(), []).append(raw)
        hashed = hashlib.sha256()
        for name in include:
            instances = remaining.get(name)
            if instances:
                hashed.update(_relaxed_header(name, instances.pop()) + b"\r\n")
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        return cls(include, hashed, body_hash)


_SIGNED = tuple(name.lower().encode("ascii") for name in SIGNED_HEADERS)


def headers_to_sign(data: bytes) -> list[bytes]:
    """The recommended fields present in the message, with From once more (oversigned)."""
    fields, _body = _split(_with_crlf(data))
    present = {name.lower() for name, _value in fields}
    names = [name.lower().encode() for name in SIGNED_HEADERS if name.lower().encode() in present]
    if b"from" not in names:
        raise SigningError("the message has no From header to sign")
    return [b"from", *names]


@functools.lru_cache(maxsize=64)
def _private_key(private_key_pem: bytes, algorithm: Algorithm) -> RSAPrivateKey | Ed25519PrivateKey:
    """The parsed key, once per process and key (parsing an RSA key costs a signature)."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningError("the DKIM key cannot be read") from None
    wanted = RSAPrivateKey if algorithm == "rsa-sha256" else Ed25519PrivateKey
    if not isinstance(key, wanted):
        raise SigningError(f"the key is not an {algorithm.split('-')[0].upper()} key")
    return key


def _fold(tags: list[bytes], start: int) -> bytes:
    """``tags`` joined by ``; `` with folds (CRLF TAB) between them, and inside the
    ``h=`` list after a colon, so that no line passes :data:`FOLD_AT`."""
    out = b""
    column = start
    for number, tag in enumerate(tags):
        piece = tag + (b";" if number < len(tags) - 1 else b"")
        if number:
            if column + 1 + len(piece) > FOLD_AT:
                out += b"\r\n\t"
                column = 1
            else:
                out += b" "
                column += 1
        for part_number, part in enumerate(piece.split(b":") if tag.startswith(b"h=") else [piece]):
            chunk = (b":" if part_number else b"") + part
            if part_number and column + len(chunk) > FOLD_AT:
                out += b"\r\n\t"
                column = 1
            out += chunk
            column += len(chunk)
    return out


def sign(
    data: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    algorithm: Algorithm,
) -> bytes:
    """``data`` with a DKIM-Signature header prepended (relaxed/relaxed, ``d=domain``)."""
    return (
        signature_header(
            data,
            domain=domain,
            selector=selector,
            private_key_pem=private_key_pem,
            algorithm=algorithm,
        )
        + data
    )


def signature_header(
    data: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    algorithm: Algorithm,
    canonical: Canonical | None = None,
) -> bytes:
    """The DKIM-Signature header field (with its CRLF) of ``data``.

    The canonicalization and hashing are RFC 6376's (section 3.4 relaxed forms, 3.5
    tags, 3.7 hash); the signature is OpenSSL's through ``cryptography`` (RSA
    PKCS#1 v1.5 over SHA-256; Ed25519 over the SHA-256 digest, RFC 8463 section 3).
    dkimpy and OpenDKIM verify the result in the tests. ``canonical``: the
    message's :class:`Canonical`, when several keys sign it."""
    if algorithm not in ALGORITHMS:
        raise SigningError(f"unknown DKIM algorithm {algorithm!r}")
    key = _private_key(private_key_pem, algorithm)
    prepared = canonical or Canonical.of(data)
    tags = [
        b"v=1",
        b"a=" + algorithm.encode("ascii"),
        b"c=relaxed/relaxed",
        b"d=" + domain.encode("ascii"),
        b"s=" + selector.encode("ascii"),
        b"t=" + str(int(time.time())).encode("ascii"),
        b"h=" + b":".join(prepared.include),
        b"bh=" + prepared.body_hash,
        b"b=",
    ]
    value = _fold(tags, len(b"DKIM-Signature: "))
    hashed = prepared.headers_hash.copy()
    hashed.update(_relaxed_header(b"dkim-signature", b" " + value))
    digest = hashed.digest()
    if isinstance(key, RSAPrivateKey):
        signature = key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        signature = key.sign(digest)
    encoded = base64.b64encode(signature)
    newline = value.rfind(b"\n")
    column = len(value) - newline - 1 if newline >= 0 else len(b"DKIM-Signature: ") + len(value)
    room = max(FOLD_AT - column, 8)
    pieces = [encoded[:room]] + [
        encoded[i : i + FOLD_AT - 1] for i in range(room, len(encoded), FOLD_AT - 1)
    ]
    return b"DKIM-Signature: " + value + b"\r\n\t".join(pieces) + b"\r\n"


def sign_all(data: bytes, signers: Iterable[DkimSigner]) -> bytes:
    """``data`` signed by every signer (the last one's signature first; none signs
    another, DKIM-Signature not being among the signed fields)."""
    headers = b""
    canonical: Canonical | None = None
    for signer in signers:
        canonical = canonical or Canonical.of(data)
        headers = signer.header(data, canonical) + headers
    return headers + data
