"""Signed VERP return paths: ``b-<token>@<bounce domain>`` names the message a bounce is about.

Every message leaves with its own envelope sender (Variable Envelope Return Path), so
a bounce -- even a non-standard one that quotes nothing -- names its message by the
address it was sent to. The token is::

    base32( AES-256(k_id, message id)  |  HMAC-SHA256(k_tag, that block)[:10] )

* The message id is enciphered as one AES block (a keyed permutation of 128 bits),
  so the return path shows no id that could be guessed or counted (message ids are
  time-ordered UUIDv7), and no PHI: nothing but the id is in it.
* The 80-bit tag makes a forged or altered token fail: nobody can make a bounce
  suppress an address of their choosing by guessing return paths.
* Base32 without padding, lower case: mail systems may change the case of a local
  part (RFC 5321 section 2.4 allows them to treat it case-insensitively), and
  decoding folds case first. The local part is ``b-`` and 42 characters, inside the
  64 RFC 5321 allows.

The keys derive from the deployment secret (:mod:`carepost.delivery.feedback_keys`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import uuid
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from carepost.delivery.feedback_keys import derive_key

PREFIX = "b-"
# The List-Unsubscribe mailto: address (RFC 2369) of a message: u-<token>@<bounce domain>.
UNSUBSCRIBE_PREFIX = "u-"
TAG_BYTES = 10
TOKEN_CHARS = 42  # base32 of 16 + 10 bytes, unpadded


@lru_cache(maxsize=8)
def _block_cipher(secret: bytes) -> Cipher[modes.ECB]:
    # One 16-byte block under a key of its own: ECB is the raw permutation, which is
    # exactly what is wanted (a random-looking, invertible image of one id). Kept per
    # secret (a worker signs every message it sends with the same one).
    return Cipher(algorithms.AES(derive_key(secret, "verp-id")), modes.ECB())  # noqa: S305


@lru_cache(maxsize=8)
def _tag_key(secret: bytes) -> bytes:
    return derive_key(secret, "verp-tag")


_local = threading.local()


def _encipher(secret: bytes, block: bytes) -> bytes:
    """AES of one block. ECB enciphers each block alone, so one encryptor serves every
    token: kept per thread (an encryptor is not to be shared between threads) and per
    secret, never finalized."""
    encryptors: dict[bytes, CipherContext] | None = getattr(_local, "encryptors", None)
    if encryptors is None:
        encryptors = _local.encryptors = {}
    encryptor = encryptors.get(secret)
    if encryptor is None:
        if len(encryptors) >= 8:
            encryptors.clear()
        encryptor = encryptors[secret] = _block_cipher(secret).encryptor()
    return bytes(encryptor.update(block))


def _tag(secret: bytes, block: bytes) -> bytes:
    return hmac.digest(_tag_key(secret), block, "sha256")[:TAG_BYTES]


def return_token(message_id: uuid.UUID, *, secret: bytes) -> str:
    """The opaque token of a message (the local part without ``b-``)."""
    block = _encipher(secret, message_id.bytes)
    return base64.b32encode(block + _tag(secret, block)).decode("ascii").rstrip("=").lower()


def return_path(message_id: uuid.UUID, *, bounce_domain: str, secret: bytes) -> str:
    """The envelope sender (MAIL FROM) of a message: ``b-<token>@bounce_domain``."""
    return return_path_of(return_token(message_id, secret=secret), bounce_domain=bounce_domain)


def return_path_of(token: str, *, bounce_domain: str) -> str:
    """The return path of a message whose token is made already (it is in a header too)."""
    return f"{PREFIX}{token}@{bounce_domain.lower()}"


def message_of_token(token: str, *, secret: bytes) -> uuid.UUID | None:
    """The message a token names, or None when it is malformed or its tag is wrong."""
    text = token.strip().upper()
    if len(text) != TOKEN_CHARS:
        return None
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    # The last character carries unused bits: only the one canonical spelling of
    # these bytes is a token, so no other character string names the same message.
    if base64.b32encode(raw).decode().rstrip("=") != text:
        return None
    block, tag = raw[:16], raw[16:]
    if len(block) != 16 or not hmac.compare_digest(tag, _tag(secret, block)):
        return None
    decryptor = _block_cipher(secret).decryptor()
    return uuid.UUID(bytes=decryptor.update(block) + decryptor.finalize())


def unsubscribe_address_of(token: str, *, bounce_domain: str) -> str:
    """Where a mail client sends an unsubscribe request for the message whose token
    this is (``List-Unsubscribe: <mailto:...>``): ``u-<token>@bounce_domain``."""
    return f"{UNSUBSCRIBE_PREFIX}{token}@{bounce_domain.lower()}"


def _message_of_address(address: str, prefix: str, secret: bytes) -> uuid.UUID | None:
    text = address.strip().strip("<>").strip()
    local, at, _domain = text.rpartition("@")
    if not at:
        local = text
    if not local.lower().startswith(prefix):
        return None
    return message_of_token(local[len(prefix) :], secret=secret)


def message_of_return_path(address: str, *, secret: bytes) -> uuid.UUID | None:
    """The message a return path names (any case, with or without ``<>``), or None."""
    return _message_of_address(address, PREFIX, secret)


def message_of_unsubscribe_address(address: str, *, secret: bytes) -> uuid.UUID | None:
    """The message an unsubscribe address (:func:`unsubscribe_address_of`) names, or None."""
    return _message_of_address(address, UNSUBSCRIBE_PREFIX, secret)
