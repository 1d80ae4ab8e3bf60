"""The "view in browser" link of a message: ``/t/v/{token}``.

A token is base64url of::

    version (1) | kind "v" (1) | tenant id (16) | message id (16) | expires (4) | tag (16)

``tag`` is HMAC-SHA256 (truncated to 128 bits) over everything before it, keyed by a
per-tenant key derived from the tenant's index key (as the recipient links of
:mod:`carepost.consent.links`), so a token cannot be guessed, forged, moved to another
message or given a later expiry. It carries ids only: no address, no name, no PHI in
the URL. The tenant id is in clear because it names the key that checks the tag.

The link lives as long as the web copy is kept: the setting ``web_copy_days``
(:data:`DEFAULT_TTL`, 90 days, by default) after the message is accepted, and never
longer than the message row itself (a message purged by retention is a 404). Every
way a token can be wrong is the same 404: no oracle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carepost.crypto.keyring import TenantKeys

VERSION = 1
KIND = ord("v")
TAG_BYTES = 16
MAX_TOKEN = 120
VIEW_PATH = "/t/v/"
DEFAULT_TTL = timedelta(days=90)
_BODY = struct.Struct(">BB16s16sI")


@dataclass(frozen=True)
class ViewLink:
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    expires_at: datetime


def _key(keys: TenantKeys) -> bytes:
    return hmac.new(keys.index_key, b"carepost|view-in-browser|v1", hashlib.sha256).digest()


def _tag(keys: TenantKeys, body: bytes) -> bytes:
    return hmac.new(_key(keys), body, hashlib.sha256).digest()[:TAG_BYTES]


def view_token(
    keys: TenantKeys,
    message_id: uuid.UUID,
    *,
    now: datetime | None = None,
    ttl: timedelta = DEFAULT_TTL,
) -> str:
    expires = int(((now or datetime.now(UTC)) + ttl).timestamp())
    body = _BODY.pack(VERSION, KIND, keys.tenant_id.bytes, message_id.bytes, expires)
    return base64.urlsafe_b64encode(body + _tag(keys, body)).decode("ascii").rstrip("=")


def view_url(
    keys: TenantKeys,
    message_id: uuid.UUID,
    base_url: str,
    *,
    now: datetime | None = None,
    ttl: timedelta = DEFAULT_TTL,
) -> str:
    """The message's web view link (what ``{{ view_in_browser_url }}`` renders to)."""
    return f"{base_url.rstrip('/')}{VIEW_PATH}{view_token(keys, message_id, now=now, ttl=ttl)}"


def _split(token: str) -> tuple[bytes, ViewLink, bytes] | None:
    if not token or len(token) > MAX_TOKEN:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _BODY.size + TAG_BYTES:
        return None
    body, tag = raw[: _BODY.size], raw[_BODY.size :]
    version, kind, tenant, message, expires = _BODY.unpack(body)
    if version != VERSION or kind != KIND:
        return None
    link = ViewLink(
        uuid.UUID(bytes=tenant), uuid.UUID(bytes=message), datetime.fromtimestamp(expires, UTC)
    )
    return body, link, tag


def token_tenant(token: str) -> uuid.UUID | None:
    """The tenant a token claims (unverified: load its keys, then :func:`verify`)."""
    split = _split(token)
    return split[1].tenant_id if split else None


def verify(keys: TenantKeys, token: str, *, now: datetime | None = None) -> ViewLink | None:
    """The link, if its tag is right for these keys and it has not expired."""
    split = _split(token)
    if split is None:
        return None
    body, link, tag = split
    if link.tenant_id != keys.tenant_id or not hmac.compare_digest(tag, _tag(keys, body)):
        return None
    if link.expires_at <= (now or datetime.now(UTC)):
        return None
    return link
