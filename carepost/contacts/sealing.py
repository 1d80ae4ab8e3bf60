"""Sealing a checked batch ahead of its write: ciphertexts, blind indexes and tokens.

What a new contact stores besides its id and timestamps depends only on the values
sent and the tenant's keys and fields, not on the database: the sealed PHI columns
(AES-256-GCM, exactly what the columns' own types seal), the blind indexes of its
unique identifiers (which also find the contact an item updates) and its
segmentation tokens. An import computes them for the next batch while the current
one is written (:mod:`carepost.imports.preparation`, in a worker process holding the
tenant's active data key and index key), so the write only looks the keys up and
copies ready values. Items that turn out to update a stored contact use the blind
indexes only; their changed row is sealed at the write, as always.

A :class:`SealedBatch` is only used by a write with the same active key version and
the same fields (:func:`carepost.contacts.upserts.upsert_prepared` checks both); it
holds ciphertexts and keyed tokens, never plaintext or keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from carepost.contacts import sync
from carepost.contacts.fields import STANDARD_FIELDS, IndexKind
from carepost.contacts.models import Contact, ContactIdentifier
from carepost.contacts.prepare import IDENTIFIER_KINDS, PreparedBatch, PreparedContact
from carepost.contacts.values import merge_custom
from carepost.crypto.fields import EncryptedType
from carepost.crypto.keyring import TenantKeys

ENCRYPTED_COLUMNS: dict[str, EncryptedType] = {
    column.name: column.type
    for column in Contact.__table__.c
    if isinstance(column.type, EncryptedType)
}
IDENTIFIER_VALUE: EncryptedType = ContactIdentifier.__table__.c.value.type  # type: ignore[assignment]
INDEX_COLUMNS = {
    name: spec.index_column
    for name, spec in STANDARD_FIELDS.items()
    if spec.index is not IndexKind.NONE
}
UNIQUE_STANDARD = tuple(
    name for name, spec in STANDARD_FIELDS.items() if spec.index is IndexKind.UNIQUE
)


@dataclass(frozen=True, repr=False)
class KeyMaterial:
    """What sealing ahead needs of a tenant's keys (picklable, for a worker process on
    the same host): the active data key and the index key, never older versions."""

    tenant_id: uuid.UUID
    version: int
    data_key: bytes
    index_key: bytes

    def __repr__(self) -> str:  # never print key material
        return f"KeyMaterial(tenant_id={self.tenant_id}, version={self.version})"

    @classmethod
    def of(cls, keys: TenantKeys) -> KeyMaterial:
        version = keys.active_version
        return cls(keys.tenant_id, version, keys.data_keys[version], keys.index_key)

    def keys(self) -> TenantKeys:
        """The keys, made once per process (their bucket-token memo and nonce block
        then serve every batch of the import)."""
        keys = _KEYS.get(self)
        if keys is None or keys.data_keys.get(self.version) != self.data_key:
            _KEYS.clear()
            keys = _KEYS[self] = self._make_keys()
        return keys

    def _make_keys(self) -> TenantKeys:
        return TenantKeys(
            self.tenant_id, {self.version: self.data_key}, self.version, self.index_key
        )


_KEYS: dict[KeyMaterial, TenantKeys] = {}


class SealedContact(NamedTuple):
    """One prepared contact, sealed as a new contact would be stored (a tuple: a
    batch of them crosses a process boundary, and tuples pickle fastest)."""

    # claim (unique standard field or identifier kind) -> blind index
    claims: dict[str, str]
    # contact column -> stored value: ciphertexts of the encrypted columns, blind indexes
    columns: dict[str, Any]
    # (field key, token) of the new contact's custom values and birth date
    tokens: list[tuple[str, str]]
    # (kind, sealed value, blind index) of its external ids
    identifiers: list[tuple[str, bytes, str]]


@dataclass
class SealedBatch:
    version: int
    # One per item of the prepared batch; None for an item with errors.
    items: list[SealedContact | None]


def claim_token(keys: TenantKeys, claim: str, value: str) -> str:
    if claim in IDENTIFIER_KINDS:
        return sync.identifier_token(keys, claim, value)
    return keys.blind_index(STANDARD_FIELDS[claim].index_label, value)


def claims_of(prepared: PreparedContact, keys: TenantKeys) -> dict[str, str]:
    """The unique identifiers an item would hold: claim name -> token."""
    found = {}
    for name in UNIQUE_STANDARD:
        value = prepared.standard.get(name)
        if value:
            found[name] = claim_token(keys, name, value)
    for kind, value in prepared.identifiers.items():
        if value:
            found[kind] = claim_token(keys, kind, value)
    return found


def seal_contact(
    keys: TenantKeys,
    prepared: PreparedContact,
    schema: Mapping[str, Any],
    memo: sync.TokenMemo,
) -> SealedContact:
    claims = claims_of(prepared, keys)
    version = keys.active_version
    columns: dict[str, Any] = {}
    custom = merge_custom(None, prepared.custom) or None
    plain: dict[str, Any] = {name: prepared.standard.get(name) for name in ENCRYPTED_COLUMNS}
    plain["custom"] = custom
    for name, column_type in ENCRYPTED_COLUMNS.items():
        value = plain[name]
        columns[name] = (
            None
            if value is None
            else keys.encrypt(column_type.label, column_type._dump(value), version=version)
        )
    for name, index_column in INDEX_COLUMNS.items():
        value = prepared.standard.get(name)
        columns[index_column] = (
            (claims.get(name) or claim_token(keys, name, value)) if value else None
        )
    birth_date = prepared.standard.get("birth_date")
    tokens = sync.contact_tokens(keys, schema, custom, birth_date, memo)
    identifiers = [
        (
            kind,
            keys.encrypt(IDENTIFIER_VALUE.label, IDENTIFIER_VALUE._dump(value), version=version),
            claims[kind],
        )
        for kind, value in prepared.identifiers.items()
        if value is not None
    ]
    return SealedContact(claims, columns, tokens, identifiers)


def seal_batch(batch: PreparedBatch, keys: TenantKeys) -> SealedBatch:
    """Seal every prepared contact of ``batch`` as a new contact (errors: None)."""
    memo: sync.TokenMemo = {}
    schema = batch.context.schema
    return SealedBatch(
        keys.active_version,
        [
            seal_contact(keys, item, schema, memo) if isinstance(item, PreparedContact) else None
            for item in batch.items
        ],
    )
