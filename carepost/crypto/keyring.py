"""Per-tenant envelope encryption (AES-256-GCM) and keyed blind indexes.

Each tenant has versioned *data keys* and one *index key*, all wrapped by the
master key (see :mod:`carepost.crypto.keyprovider`). A value is sealed as::

    0x01 | version (4 bytes, big endian) | nonce (12) | ciphertext+tag

with associated data ``carepost|<tenant id>|<label>|v<version>``, so a ciphertext
copied to another tenant, another column or another key version fails to open.

The keys of the tenant a unit of work acts for are *bound* to the current context
(:func:`bind_tenant_keys`); the encrypted column types read them from there. A read
of another tenant's row under the wrong binding fails closed with CryptoError.

A :class:`TenantKeys` is a snapshot taken when a unit of work starts: it holds
every data key version that existed then and writes with the newest active one.
Loading keys per unit of work (``Runtime.tenant_session``) is how a process picks
up a version added by a rotation (:mod:`carepost.crypto.rotation`).
"""

from __future__ import annotations

import hmac
import os
import secrets
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from threading import Lock

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.core.database import utcnow
from carepost.core.errors import CryptoError
from carepost.crypto.keyprovider import MasterKeyProvider, WrappedKey
from carepost.crypto.models import TenantKey

FORMAT_V1 = 0x01
HEADER = struct.Struct(">BI")
NONCE_BYTES = 12
# Bucket tokens remembered per TenantKeys (see TenantKeys.bucket_token): about 10 MB.
BUCKET_TOKEN_MEMO = 50_000
# Nonces drawn from the system's random source at once (see TenantKeys._nonce).
NONCE_BLOCK = 1024


def _wrap_context(tenant_id: uuid.UUID, kind: str, version: int) -> bytes:
    return f"carepost-key|{tenant_id}|{kind}|v{version}".encode()


@dataclass
class TenantKeys:
    """The unwrapped keys of one tenant, held in memory only."""

    tenant_id: uuid.UUID
    data_keys: dict[int, bytes]
    active_version: int
    index_key: bytes
    _ciphers: dict[int, AESGCM] = field(default_factory=dict, repr=False)
    _aads: dict[tuple[str, int], bytes] = field(default_factory=dict, repr=False)
    _bucket_tokens: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _nonces: bytes = field(default=b"", repr=False)
    _nonce_at: int = field(default=0, repr=False)
    _nonce_pid: int = field(default=0, repr=False)
    _nonce_lock: Lock = field(default_factory=Lock, repr=False)

    def __repr__(self) -> str:  # never print key material
        return f"TenantKeys(tenant_id={self.tenant_id}, versions={sorted(self.data_keys)})"

    def _cipher(self, version: int) -> AESGCM:
        cipher = self._ciphers.get(version)
        if cipher is None:
            key = self.data_keys.get(version)
            if key is None:
                raise CryptoError(
                    f"data key version {version} is not loaded for this tenant "
                    "(keys are loaded per unit of work; reload them after a rotation)"
                )
            cipher = self._ciphers[version] = AESGCM(key)
        return cipher

    def _aad(self, label: str, version: int) -> bytes:
        # Built once per label and version: a bulk write seals hundreds of thousands of values.
        aad = self._aads.get((label, version))
        if aad is None:
            aad = self._aads[label, version] = (
                f"carepost|{self.tenant_id}|{label}|v{version}".encode()
            )
        return aad

    def _nonce(self) -> bytes:
        """A fresh random nonce. Read from the system's random source a block at a
        time (a bulk write seals hundreds of thousands of values); the block is never
        reused (the lock: two threads never take the same slice), and is dropped in a
        forked child, which must not repeat its parent's."""
        with self._nonce_lock:
            at = self._nonce_at
            if at >= len(self._nonces) or self._nonce_pid != os.getpid():
                self._nonces = secrets.token_bytes(NONCE_BYTES * NONCE_BLOCK)
                self._nonce_pid, at = os.getpid(), 0
            self._nonce_at = at + NONCE_BYTES
            return self._nonces[at : at + NONCE_BYTES]

    def encrypt(self, label: str, plaintext: bytes, *, version: int | None = None) -> bytes:
        version = self.active_version if version is None else version
        nonce = self._nonce()
        sealed = self._cipher(version).encrypt(nonce, plaintext, self._aad(label, version))
        return HEADER.pack(FORMAT_V1, version) + nonce + sealed

    def decrypt(self, label: str, blob: bytes) -> bytes:
        version = sealed_version(blob)
        nonce = blob[HEADER.size : HEADER.size + NONCE_BYTES]
        sealed = blob[HEADER.size + NONCE_BYTES :]
        try:
            return self._cipher(version).decrypt(nonce, sealed, self._aad(label, version))
        except InvalidTag:
            raise CryptoError(f"{label}: ciphertext failed authentication") from None

    def blind_index(self, label: str, value: str) -> str:
        """A keyed, deterministic token for equality lookups without storing the value."""
        # hmac.digest is the one-shot (OpenSSL) form of hmac.new(...).digest(): same bytes.
        return hmac.digest(self.index_key, f"{label}\x00{value}".encode(), "sha256").hex()[:40]

    def bucket_token(self, label: str, bucket: str) -> str:
        """:meth:`blind_index` of a segmentation bucket, remembered for this unit of work.

        Buckets repeat across contacts (a condition code, a gender, a day, an A1c of
        7.2), so a batch computes each HMAC once. The memo is bounded and holds only
        what the token table stores anyway; it goes away with the keys.
        """
        key = (label, bucket)
        token = self._bucket_tokens.get(key)
        if token is None:
            if len(self._bucket_tokens) >= BUCKET_TOKEN_MEMO:
                self._bucket_tokens.clear()
            token = self._bucket_tokens[key] = self.blind_index(label, bucket)
        return token


def sealed_header(version: int) -> bytes:
    """The first bytes of every value sealed under ``version``.

    The version is big endian right after the format byte, so comparing headers
    bytewise (as SQL does for BLOB/bytea) orders values by key version.
    """
    return HEADER.pack(FORMAT_V1, version)


def sealed_version(blob: bytes) -> int:
    if len(blob) < HEADER.size + NONCE_BYTES + 16:
        raise CryptoError("ciphertext is truncated")
    fmt, version = HEADER.unpack_from(blob)
    if fmt != FORMAT_V1:
        raise CryptoError(f"unknown ciphertext format {fmt}")
    return int(version)


_bound: ContextVar[TenantKeys | None] = ContextVar("carepost_tenant_keys", default=None)


def current_tenant_keys() -> TenantKeys:
    keys = _bound.get()
    if keys is None:
        raise CryptoError("no tenant keys are bound to this unit of work")
    return keys


@contextmanager
def bind_tenant_keys(keys: TenantKeys) -> Iterator[TenantKeys]:
    token = _bound.set(keys)
    try:
        yield keys
    finally:
        _bound.reset(token)


class Keyring:
    """Loads, creates, caches and rotates tenant keys through a master key provider."""

    def __init__(self, provider: MasterKeyProvider) -> None:
        self.provider = provider
        self._unwrapped: dict[tuple[uuid.UUID, str, int], bytes] = {}
        self._lock = Lock()

    def use_provider(self, provider: MasterKeyProvider) -> None:
        """Switch to a reloaded master key provider (after a master-key change).

        The cache of unwrapped keys is dropped so that nothing keeps working only
        because it was unwrapped under a master key the new provider no longer has.
        """
        with self._lock:
            self.provider = provider
            self._unwrapped.clear()

    def _unwrap(self, row: TenantKey) -> bytes:
        cache_key = (row.id, row.master_key_id, row.version)
        with self._lock:
            raw = self._unwrapped.get(cache_key)
        if raw is None:
            raw = self.provider.unwrap(
                WrappedKey(row.master_key_id, row.wrapped_key),
                _wrap_context(row.tenant_id, row.kind, row.version),
            )
            with self._lock:
                self._unwrapped[cache_key] = raw
        return raw

    def load(self, session: Session, tenant_id: uuid.UUID) -> TenantKeys:
        rows = session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id)).all()
        data = {row.version: self._unwrap(row) for row in rows if row.kind == "data"}
        active = [row.version for row in rows if row.kind == "data" and row.status == "active"]
        index = [self._unwrap(row) for row in rows if row.kind == "index"]
        if not data or not active or not index:
            raise CryptoError("this tenant has no keys (was it created with carepost?)")
        return TenantKeys(tenant_id, data, max(active), index[0])

    def _add_key(self, session: Session, tenant_id: uuid.UUID, kind: str, version: int) -> None:
        raw = AESGCM.generate_key(bit_length=256)
        wrapped = self.provider.wrap(raw, _wrap_context(tenant_id, kind, version))
        session.add(
            TenantKey(
                tenant_id=tenant_id,
                kind=kind,
                version=version,
                master_key_id=wrapped.master_key_id,
                wrapped_key=wrapped.ciphertext,
            )
        )

    def create_tenant_keys(self, session: Session, tenant_id: uuid.UUID) -> TenantKeys:
        self._add_key(session, tenant_id, "data", 1)
        self._add_key(session, tenant_id, "index", 1)
        session.flush()
        return self.load(session, tenant_id)

    def add_data_key_version(
        self, session: Session, tenant_id: uuid.UUID, *, retire_previous: bool = True
    ) -> int:
        """Create the next data key version; new values are sealed with it from now on.

        :meth:`load` writes with the highest active version, so the new one takes
        over at once either way. A rotation passes ``retire_previous=False`` and
        retires the old versions itself once no row uses them any more.
        """
        rows = session.scalars(
            select(TenantKey)
            .where(TenantKey.tenant_id == tenant_id, TenantKey.kind == "data")
            .with_for_update()
        ).all()
        version = max((row.version for row in rows), default=0) + 1
        if retire_previous:
            for row in rows:
                if row.status == "active":
                    row.status = "retired"
                    row.retired_at = utcnow()
        self._add_key(session, tenant_id, "data", version)
        session.flush()
        return version

    def retire_data_keys(self, session: Session, tenant_id: uuid.UUID, *, below: int) -> list[int]:
        """Mark every active data key version older than ``below`` retired (still readable)."""
        rows = session.scalars(
            select(TenantKey)
            .where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.kind == "data",
                TenantKey.version < below,
                TenantKey.status == "active",
            )
            .with_for_update()
        ).all()
        for row in rows:
            row.status = "retired"
            row.retired_at = utcnow()
        session.flush()
        return sorted(row.version for row in rows)

    def destroy_data_keys(
        self, session: Session, tenant_id: uuid.UUID, versions: list[int]
    ) -> list[int]:
        """Delete retired data key versions for good; values sealed with them become noise.

        Active versions are never destroyed. The caller proves no row uses them.
        """
        rows = session.scalars(
            select(TenantKey).where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.kind == "data",
                TenantKey.status == "retired",
                TenantKey.version.in_(versions),
            )
        ).all()
        destroyed = sorted(row.version for row in rows)
        row_ids = {row.id for row in rows}
        for row in rows:
            session.delete(row)
        session.flush()
        with self._lock:
            for cache_key in [k for k in self._unwrapped if k[0] in row_ids]:
                del self._unwrapped[cache_key]
        return destroyed

    def rewrap_all(self, session: Session, tenant_id: uuid.UUID) -> int:
        """Re-wrap every key of a tenant under the active master key. Returns how many moved."""
        moved = 0
        for row in session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id)):
            if row.master_key_id == self.provider.active_key_id:
                continue
            raw = self._unwrap(row)
            wrapped = self.provider.wrap(raw, _wrap_context(row.tenant_id, row.kind, row.version))
            row.master_key_id = wrapped.master_key_id
            row.wrapped_key = wrapped.ciphertext
            moved += 1
        session.flush()
        return moved
