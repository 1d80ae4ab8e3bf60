"""Rewriting a message's HTML for tracking, and the tokens its links carry.

:func:`tracked_html` (called by the outbox at render time, after the tenant's
tracking setting said yes) replaces every ``http(s)`` link of an ``<a href>``
with ``<base_url>/t/c/<token>`` and adds a 1x1 pixel ``<base_url>/t/o/<token>.gif``.
Links it leaves alone: ``mailto:``/``tel:``/anchors, carepost's own unsubscribe and
preference-center links (``/u/...``, ``/p/...``: RFC 8058 one-click and CAN-SPAM
want them direct), any link whose URL says ``unsubscribe``, and links marked
``data-carepost-notrack``.

**Where the original URL lives.** Personalized links may carry PHI (a patient
portal deep link, say), so a URL is never visible in a tracking link. It is stored
*in the token, encrypted*: the token is::

    base64url( version | kind | nonce(12) | AES-256-GCM(message id | link index | URL) )

with the version and kind as associated data. Tampering with any byte fails the
GCM tag -- the redirect answers 404, so ``/t/c/`` is never an open redirect -- and
only carepost (holding the deployment secret) can read or mint tokens. Nothing
needs storing per message, so rendering stays a pure function. What a token still
reveals is its length (about the URL's length). The message id inside is a random
UUID, and is encrypted too: tokens are not guessable and not linkable to an id.
"""

from __future__ import annotations

import base64
import binascii
import html as html_lib
import re
import secrets as random_bytes
import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.delivery.feedback_keys import derive_key

VERSION = 1
NONCE_BYTES = 12
MAX_URL = 2048
MAX_TOKEN = 4096
MAX_LINKS = 500
OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_RECIPIENT_PATHS = ("/u/", "/p/")


class TokenKind(StrEnum):
    OPEN = "o"
    CLICK = "c"


@dataclass(frozen=True)
class TrackedLink:
    """What a valid token stands for."""

    kind: TokenKind
    message_id: uuid.UUID
    link_index: int | None = None
    url: str | None = None


@lru_cache(maxsize=8)
def _cipher(secret: bytes) -> AESGCM:
    # Kept per secret: derived and set up once, not for each token (AESGCM holds no
    # state between calls, so threads share it).
    return AESGCM(derive_key(secret, "tracking"))


def _header(kind: TokenKind) -> bytes:
    return bytes([VERSION, ord(kind.value)])


def _seal(secret: bytes, kind: TokenKind, plaintext: bytes) -> str:
    header = _header(kind)
    nonce = random_bytes.token_bytes(NONCE_BYTES)
    sealed = _cipher(secret).encrypt(nonce, plaintext, header)
    return base64.urlsafe_b64encode(header + nonce + sealed).decode("ascii").rstrip("=")


def open_token(message_id: uuid.UUID, *, secret: bytes) -> str:
    return _seal(secret, TokenKind.OPEN, message_id.bytes)


def click_token(message_id: uuid.UUID, link_index: int, url: str, *, secret: bytes) -> str:
    plaintext = message_id.bytes + link_index.to_bytes(2, "big") + url.encode("utf-8")
    return _seal(secret, TokenKind.CLICK, plaintext)


def read_token(token: str, *, secret: bytes) -> TrackedLink | None:
    """The link a token stands for, or None for anything malformed or tampered."""
    text = token.removesuffix(".gif")
    if not text or len(text) > MAX_TOKEN:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 2 + NONCE_BYTES + 16 + 16 or raw[0] != VERSION:
        return None
    try:
        kind = TokenKind(chr(raw[1]))
    except ValueError:
        return None
    nonce, sealed = raw[2 : 2 + NONCE_BYTES], raw[2 + NONCE_BYTES :]
    try:
        plaintext = _cipher(secret).decrypt(nonce, sealed, raw[:2])
    except InvalidTag:
        return None
    message_id = uuid.UUID(bytes=plaintext[:16])
    if kind is TokenKind.OPEN:
        return TrackedLink(kind, message_id) if len(plaintext) == 16 else None
    if len(plaintext) < 18:
        return None
    try:
        url = plaintext[18:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not is_trackable_url(url):
        return None
    return TrackedLink(kind, message_id, int.from_bytes(plaintext[16:18], "big"), url)


def is_trackable_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= MAX_URL


def _leave_alone(url: str, tag: str, base_url: str) -> bool:
    if not is_trackable_url(url) or "data-carepost-notrack" in tag.lower():
        return True
    if "unsubscribe" in url.lower():
        return True
    if url.startswith(base_url):
        path = url[len(base_url) :]
        return path.startswith((*_RECIPIENT_PATHS, "/t/"))
    return False


def tracked_html(
    html: str,
    *,
    message_id: uuid.UUID,
    base_url: str,
    secret: bytes,
    opens: bool = True,
    clicks: bool = True,
) -> str:
    """The HTML with its links rewritten to click redirects and an open pixel added
    (``opens``/``clicks`` follow the tenant's :func:`carepost.tracking.service.tracking_choice`)."""
    base = base_url.rstrip("/")
    counter = iter(range(MAX_LINKS))

    def rewrite_anchor(anchor: re.Match[str]) -> str:
        tag = anchor.group(0)
        href = _HREF.search(tag)
        if href is None:
            return tag
        url = html_lib.unescape(href.group(2) if href.group(2) is not None else href.group(3))
        if _leave_alone(url.strip(), tag, base):
            return tag
        index = next(counter, None)
        if index is None:
            return tag
        token = click_token(message_id, index, url.strip(), secret=secret)
        replacement = f'{href.group(1)}"{base}{CLICK_PATH}{token}"'
        return tag[: href.start()] + replacement + tag[href.end() :]

    rewritten = _ANCHOR.sub(rewrite_anchor, html) if clicks else html
    if not opens:
        return rewritten
    pixel = (
        f'<img src="{base}{OPEN_PATH}{open_token(message_id, secret=secret)}.gif" '
        'width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">'
    )
    closing = max(_BODY_END.finditer(rewritten), key=lambda match: match.start(), default=None)
    if closing is not None:
        return rewritten[: closing.start()] + pixel + rewritten[closing.start() :]
    return rewritten + pixel
