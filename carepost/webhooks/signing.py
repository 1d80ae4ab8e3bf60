"""The ``Carepost-Signature`` header: HMAC-SHA256 over ``"<unix time>.<body>"``.

Format (modelled on Stripe's)::

    Carepost-Signature: t=1764771234,v1=5257a869e7ec...(64 hex digits)

The key is the endpoint's secret string (``whsec_...``) as UTF-8 bytes. While a
rotated-out secret is still valid, a second ``v1=`` signed with it follows, so a
receiver holding either secret verifies. The timestamp is signed too: a receiver
that refuses timestamps older than its tolerance (five minutes is usual) refuses a
replayed request even though its signature is genuine. See docs/webhooks.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

HEADER = "Carepost-Signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(secrets_in_use: Iterable[str], timestamp: int, body: bytes) -> str:
    parts = [f"t={timestamp}"]
    parts += [f"v1={signature(secret, timestamp, body)}" for secret in secrets_in_use]
    return ",".join(parts)


def verify_signature(
    header: str,
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """The receiver's check (the recipe in docs/webhooks.md, as carepost's own tests run it)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
