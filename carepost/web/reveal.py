"""Show-once secrets across a redirect (recovery codes).

The codes travel from the POST that made them to the page that shows them in a
short-lived cookie sealed with the organization's data key (AES-256-GCM) and bound
to the sign-in session and the purpose, so they are never stored in the clear, a
reload after the redirect does not repeat the action, and the page that opens the
cookie deletes it: the codes are shown once.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid

from fastapi.responses import Response

from carepost.core.config import Settings
from carepost.core.errors import CryptoError
from carepost.crypto.keyring import TenantKeys

REVEAL_COOKIE = "carepost_reveal"
REVEAL_SECONDS = 300


def _label(purpose: str, session_id: uuid.UUID | None) -> str:
    return f"console.reveal|{purpose}|{session_id}"


def seal(keys: TenantKeys, session_id: uuid.UUID | None, purpose: str, values: list[str]) -> str:
    payload = json.dumps({"values": values, "at": int(time.time())}).encode()
    return base64.urlsafe_b64encode(keys.encrypt(_label(purpose, session_id), payload)).decode()


def unseal(
    keys: TenantKeys, session_id: uuid.UUID | None, purpose: str, sealed: str | None
) -> list[str] | None:
    """The sealed values, or None when absent, tampered, of another session, or stale."""
    if not sealed:
        return None
    try:
        blob = base64.urlsafe_b64decode(sealed.encode())
        data = json.loads(keys.decrypt(_label(purpose, session_id), blob))
    except (binascii.Error, ValueError, CryptoError):
        return None
    if not isinstance(data, dict) or time.time() - int(data.get("at", 0)) > REVEAL_SECONDS:
        return None
    values = data.get("values")
    return [str(v) for v in values] if isinstance(values, list) else None


def set_reveal_cookie(response: Response, value: str, settings: Settings, path: str) -> None:
    response.set_cookie(
        REVEAL_COOKIE,
        value,
        max_age=REVEAL_SECONDS,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path=path,
    )


def clear_reveal_cookie(response: Response, settings: Settings, path: str) -> None:
    response.delete_cookie(
        REVEAL_COOKIE, path=path, secure=settings.cookie_secure, httponly=True, samesite="strict"
    )
