"""Signed recipient links: one-click unsubscribe (``/u/{token}``) and the preference
center (``/p/{token}``), usable without signing in.

A token is base64url of::

    version (1) | kind (1) | tenant id (16) | contact id (16) | channel (1) | expires (4) | tag (16)

``tag`` is HMAC-SHA256 (truncated to 128 bits) over everything before it, keyed by a
per-tenant *link key* derived from the tenant's index key, so a token cannot be
forged, moved to another tenant or contact, or given a later expiry. Tokens carry
ids only: no address, no name, no PHI ever appears in a URL. The tenant id is in
clear because it names the key that checks the tag.

Every way a token can be wrong (malformed, tampered, expired, unknown tenant or
contact) is the same :class:`InvalidLink` to the caller: no oracle.
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
from enum import StrEnum

from carepost.core.errors import NotFound
from carepost.crypto.keyring import TenantKeys

VERSION = 1
TAG_BYTES = 16
_BODY = struct.Struct(">BB16s16sBI")
UNSUBSCRIBE_TTL = timedelta(days=400)  # CAN-SPAM: must work for 30 days at least
PREFERENCES_TTL = timedelta(days=60)
_CHANNELS = ("email", "sms")


class LinkKind(StrEnum):
    UNSUBSCRIBE = "u"
    PREFERENCES = "p"


class InvalidLink(NotFound):
    """This link is not valid or has expired."""

    code = "invalid-link"


@dataclass(frozen=True)
class RecipientLink:
    kind: LinkKind
    tenant_id: uuid.UUID
    contact_id: uuid.UUID
    channel: str
    expires_at: datetime


def _link_key(keys: TenantKeys) -> bytes:
    return hmac.new(keys.index_key, b"carepost|recipient-links|v1", hashlib.sha256).digest()


def _tag(keys: TenantKeys, body: bytes) -> bytes:
    return hmac.new(_link_key(keys), body, hashlib.sha256).digest()[:TAG_BYTES]


def make_token(
    keys: TenantKeys,
    kind: LinkKind,
    contact_id: uuid.UUID,
    channel: str,
    *,
    now: datetime | None = None,
    ttl: timedelta | None = None,
) -> str:
    now = now or datetime.now(UTC)
    ttl = (
        ttl
        if ttl is not None
        else (UNSUBSCRIBE_TTL if kind is LinkKind.UNSUBSCRIBE else PREFERENCES_TTL)
    )
    expires = int((now + ttl).timestamp())
    body = _BODY.pack(
        VERSION,
        ord(kind.value),
        keys.tenant_id.bytes,
        contact_id.bytes,
        _CHANNELS.index(channel),
        expires,
    )
    return base64.urlsafe_b64encode(body + _tag(keys, body)).decode().rstrip("=")


def token_tenant(token: str) -> uuid.UUID:
    """The tenant a token claims to belong to (unverified: load its keys, then :func:`verify`)."""
    return _split(token)[1].tenant_id


def _split(token: str) -> tuple[bytes, RecipientLink, bytes]:
    if len(token) > 200:
        raise InvalidLink
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidLink from None
    if len(raw) != _BODY.size + TAG_BYTES:
        raise InvalidLink
    body, tag = raw[: _BODY.size], raw[_BODY.size :]
    version, kind, tenant, contact, channel, expires = _BODY.unpack(body)
    if version != VERSION or chr(kind) not in tuple(LinkKind) or channel >= len(_CHANNELS):
        raise InvalidLink
    link = RecipientLink(
        LinkKind(chr(kind)),
        uuid.UUID(bytes=tenant),
        uuid.UUID(bytes=contact),
        _CHANNELS[channel],
        datetime.fromtimestamp(expires, UTC),
    )
    return body, link, tag


def verify(
    keys: TenantKeys, token: str, kind: LinkKind, *, now: datetime | None = None
) -> RecipientLink:
    """The link a token stands for, if its tag is right, it is of ``kind`` and unexpired."""
    body, link, tag = _split(token)
    if link.tenant_id != keys.tenant_id or not hmac.compare_digest(tag, _tag(keys, body)):
        raise InvalidLink
    if link.kind is not kind or link.expires_at <= (now or datetime.now(UTC)):
        raise InvalidLink
    return link
