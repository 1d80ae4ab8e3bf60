"""Column types for PHI and secrets: encrypted on write, decrypted on read.

Each column names a stable *label* (``"contacts.first_name"``) that is bound into
the ciphertext with the tenant id, so values cannot be moved between columns or
tenants. The tenant comes from the keys bound to the current unit of work.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import LargeBinary, TypeDecorator
from sqlalchemy.engine import Dialect

from carepost.crypto.keyring import current_tenant_keys

ENCRYPTED_LABELS: dict[str, str] = {}


class EncryptedType(TypeDecorator[Any]):
    """Base of the encrypted column types; subclasses define ``_dump`` and ``_load``.

    Key rotation finds every PHI column by this type (see
    :func:`carepost.crypto.rotation.encrypted_tables`), so a new encrypted type
    must subclass it to be rotated.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        ENCRYPTED_LABELS[label] = type(self).__name__

    def _dump(self, value: Any) -> bytes:
        raise NotImplementedError

    def _load(self, raw: bytes) -> Any:
        raise NotImplementedError

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return current_tenant_keys().encrypt(self.label, self._dump(value))

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._load(current_tenant_keys().decrypt(self.label, bytes(value)))


class EncryptedString(EncryptedType):
    """A PHI or secret string stored as AES-256-GCM ciphertext."""

    cache_ok = True

    def _dump(self, value: Any) -> bytes:
        return str(value).encode("utf-8")

    def _load(self, raw: bytes) -> str:
        return raw.decode("utf-8")


class EncryptedJSON(EncryptedType):
    """Any JSON-serializable PHI value (dates as ISO strings) stored encrypted."""

    cache_ok = True

    def _dump(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")

    def _load(self, raw: bytes) -> Any:
        return json.loads(raw)
