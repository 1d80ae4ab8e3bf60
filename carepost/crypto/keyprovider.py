"""Master keys: where the keys that wrap every tenant's data keys live.

The master key never enters the database. ``LocalKeyProvider`` reads it from the
``CAREPOST_MASTER_KEY`` variable (base64 of 32 bytes) or from a key file; a KMS or
Vault provider implements the same two methods (``wrap``/``unwrap``) and is chosen
by the ``key_provider`` setting.

Key file format (JSON, mode 0600)::

    {"active": "mk-20261123", "keys": {"mk-20261123": "<base64 32 bytes>", ...}}

Older keys stay in the file after a master-key rotation until ``carepost keys
rotate`` has re-wrapped every data key under the active one
(:func:`carepost.crypto.rotation.remove_master_key` refuses to drop a key that still
wraps one). A provider read from a file re-reads it when the file changes, so a
process that started before a master-key rotation learns the new key without a
restart (see docs/encryption.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.core.config import Settings
from carepost.core.errors import ConfigError, CryptoError

NONCE_BYTES = 12


@dataclass(frozen=True)
class WrappedKey:
    master_key_id: str
    ciphertext: bytes


class MasterKeyProvider(Protocol):
    """Wraps and unwraps data keys; implementations: local file/env, KMS, Vault."""

    @property
    def active_key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes: ...


def _decode_key(label: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"master key {label} is not valid base64") from None
    if len(raw) != 32:
        raise ConfigError(f"master key {label} must be 32 bytes (AES-256), got {len(raw)}")
    return raw


class LocalKeyProvider:
    """Master keys held by this process, read from the environment or a key file."""

    def __init__(self, keys: dict[str, bytes], active: str, *, path: Path | None = None) -> None:
        if active not in keys:
            raise ConfigError(f"active master key {active!r} is not among the keys")
        # One tuple, swapped whole, so a concurrent reader never sees keys and
        # active id from two different versions of the file.
        self._state: tuple[dict[str, bytes], str] = (keys, active)
        self._path = path
        self._file_stamp = _file_stamp(path) if path is not None else None

    @classmethod
    def from_file(cls, path: Path) -> LocalKeyProvider:
        keys, active = _read_key_file(path)
        return cls(keys, active, path=path)

    @property
    def active_key_id(self) -> str:
        self._refresh_if_changed()
        return self._state[1]

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._state[0])

    def _refresh_if_changed(self) -> None:
        """Re-read the key file if another process (a rotation) has rewritten it."""
        if self._path is None:
            return
        stamp = _file_stamp(self._path)
        if stamp == self._file_stamp or stamp is None:
            return
        keys, active = _read_key_file(self._path)
        if active not in keys:
            raise ConfigError(f"active master key {active!r} is not among the keys")
        # Keys this process already holds stay usable: a key removed from the file is
        # only forgotten at restart, so in-flight work never loses a key mid-way.
        self._state = ({**self._state[0], **keys}, active)
        self._file_stamp = stamp

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        self._refresh_if_changed()
        keys, active = self._state
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(keys[active]).encrypt(nonce, data_key, context)
        return WrappedKey(master_key_id=active, ciphertext=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        key = self._state[0].get(wrapped.master_key_id)
        if key is None:
            self._refresh_if_changed()
            key = self._state[0].get(wrapped.master_key_id)
        if key is None:
            raise CryptoError(f"master key {wrapped.master_key_id!r} is not available")
        nonce, sealed = wrapped.ciphertext[:NONCE_BYTES], wrapped.ciphertext[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, sealed, context)
        except InvalidTag:
            raise CryptoError(
                "a data key failed to unwrap (wrong master key or tampering)"
            ) from None


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _read_key_file(path: Path) -> tuple[dict[str, bytes], str]:
    try:
        document = json.loads(path.read_text())
        entries = document["keys"]
        active = document["active"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"master key file {path} is unreadable or malformed") from None
    return {key_id: _decode_key(key_id, value) for key_id, value in entries.items()}, active


def write_key_file(path: Path, keys: dict[str, bytes], active: str) -> None:
    """Write a key file atomically with owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "active": active,
        "keys": {key_id: base64.b64encode(raw).decode() for key_id, raw in keys.items()},
    }
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
    temporary.replace(path)


def new_master_key_id() -> str:
    return "mk-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(2)


def init_key_file(path: Path) -> bool:
    """Create a key file with one fresh master key if none exists. Returns True if created."""
    if path.exists():
        return False
    key_id = new_master_key_id()
    write_key_file(path, {key_id: AESGCM.generate_key(bit_length=256)}, key_id)
    return True


def add_master_key(path: Path) -> str:
    """Add a new active master key to the key file, keeping the old ones for unwrapping."""
    keys, _active = _read_key_file(path)
    key_id = new_master_key_id()
    keys[key_id] = AESGCM.generate_key(bit_length=256)
    write_key_file(path, keys, key_id)
    return key_id


def remove_master_key(path: Path, key_id: str) -> None:
    """Drop an old master key from the key file. The caller checks nothing still uses it."""
    keys, active = _read_key_file(path)
    if key_id == active:
        raise ConfigError(f"master key {key_id!r} is the active one and cannot be removed")
    if key_id not in keys:
        raise ConfigError(f"master key {key_id!r} is not in {path}")
    del keys[key_id]
    write_key_file(path, keys, active)


def load_key_provider(settings: Settings) -> LocalKeyProvider:
    if settings.master_key is not None:
        raw = _decode_key("CAREPOST_MASTER_KEY", settings.master_key.get_secret_value())
        return LocalKeyProvider({"env": raw}, "env")
    path = settings.master_key_file
    if not path.is_file():
        raise ConfigError(
            f"no master key: set CAREPOST_MASTER_KEY or create {path} (carepost migrate does)"
        )
    return LocalKeyProvider.from_file(path)
