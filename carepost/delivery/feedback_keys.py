"""The process-wide secret behind bounce return paths (VERP) and tracking tokens.

Bounces and tracking requests arrive without a tenant: a DSN at the bounce domain,
a browser at ``/t/o/...``. Their tokens therefore carry the message id sealed with
one deployment-wide secret, from which each use derives its own key (HMAC-SHA256
with a purpose label), so a VERP token can never be replayed as a tracking token.

The secret is ``CAREPOST_FEEDBACK_SECRET`` (base64, 32 bytes) or, when unset, the
file ``<data_dir>/feedback.key`` created on first use with mode 0600. Every
process of a deployment (web, worker, inbound listener) must see the same value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from contextlib import suppress
from functools import lru_cache
from pathlib import Path

from carepost.core.config import Settings
from carepost.core.errors import ConfigError

SECRET_BYTES = 32
KEY_FILE = "feedback.key"


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one use (``"verp"``, ``"tracking"``) of the deployment secret."""
    return hmac.new(secret, f"carepost|feedback|{purpose}|v1".encode(), hashlib.sha256).digest()


def _decode(value: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not valid base64") from None
    if len(raw) < SECRET_BYTES:
        raise ConfigError(f"{where} must hold at least {SECRET_BYTES} bytes")
    return raw


def feedback_secret(settings: Settings) -> bytes:
    """The deployment secret: the setting, else the key file (created when missing)."""
    value = settings.feedback_secret
    return _secret(value.get_secret_value() if value is not None else None, Path(settings.data_dir))


def _secret(value: str | None, data_dir: Path) -> bytes:
    if value is not None:
        return _decode(value, "CAREPOST_FEEDBACK_SECRET")
    path = data_dir / KEY_FILE
    if not path.exists():
        _create(path)
    return _decode(path.read_text(), str(path))


def _create(path: Path) -> None:
    """Write a new secret to ``path`` unless another process got there first. The
    file appears whole or not at all: the secret is written and synced under a name
    of this process's own, then linked to ``path``, which fails when it exists. (Two
    workers starting together used to read the other's file before it was written.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileExistsError):  # another process's secret is the one
            os.link(draft, path)
    finally:
        draft.unlink()


# Keyed by what the secret comes from, not by Settings: Settings holds lists
# (domains_dns_nameservers), so it cannot be a cache key.
_cached_secret = lru_cache(maxsize=4)(_secret)


def cached_feedback_secret(settings: Settings) -> bytes:
    """:func:`feedback_secret`, read once per process (the web routes ask per request)."""
    value = settings.feedback_secret
    return _cached_secret(
        value.get_secret_value() if value is not None else None, Path(settings.data_dir)
    )
