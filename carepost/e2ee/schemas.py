"""API shapes of the key directory (``/keys``). No private key is ever in one;
a recipient's address (PHI) only for callers holding ``phi:read``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carepost.e2ee.models import RecipientKey, TenantSigningKey


class KeyUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=3, max_length=320, description="The recipient's address")
    material: str = Field(
        min_length=1,
        max_length=262_144,
        description="A PEM certificate, a base64 DER certificate or an ASCII-armored "
        "OpenPGP public key",
    )
    kind: Literal["smime", "openpgp"] | None = Field(
        default=None, description="Detected from the material when left out"
    )


class KeyLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=3, max_length=320)
    at: datetime | None = Field(default=None, description="When the key is to be used (now)")
    wkd: bool = Field(default=False, description="Ask the address's Web Key Directory first")


class MessageImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1, max_length=5_000_000, description="A received signed message (RFC 5322)"
    )


class SmimeSigningUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, max_length=320, description="Sender address or *")
    certificate: str = Field(min_length=1, max_length=65_536, description="PEM certificate")
    private_key: str = Field(
        min_length=1, max_length=65_536, description="Unencrypted PKCS#8 PEM private key"
    )
    chain: str = Field(default="", max_length=262_144, description="PEM chain certificates")


class OpenpgpSigningCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=3, max_length=320)
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^<>\r\n]+$")


class RecipientKeyOut(BaseModel):
    id: uuid.UUID
    kind: str
    address: str | None = Field(description="Only with phi:read")
    fingerprint: str
    algorithm: str
    can_encrypt: bool
    not_before: datetime | None
    not_after: datetime | None
    revoked: bool
    source: str
    added_at: datetime
    seen_at: datetime

    @classmethod
    def of(cls, row: RecipientKey, *, show_address: bool) -> RecipientKeyOut:
        return cls(
            id=row.id,
            kind=row.kind,
            address=row.address if show_address else None,
            fingerprint=row.fingerprint,
            algorithm=row.algorithm,
            can_encrypt=row.can_encrypt,
            not_before=row.not_before,
            not_after=row.not_after,
            revoked=row.revoked,
            source=row.source,
            added_at=row.added_at,
            seen_at=row.seen_at,
        )


class RecipientKeyList(BaseModel):
    items: list[RecipientKeyOut]


class SigningKeyOut(BaseModel):
    """The tenant's signing identity: its public half only."""

    id: uuid.UUID
    kind: str
    address: str
    fingerprint: str
    certificate: str
    not_before: datetime | None
    not_after: datetime | None
    active: bool
    added_at: datetime

    @classmethod
    def of(cls, row: TenantSigningKey) -> SigningKeyOut:
        return cls(
            id=row.id,
            kind=row.kind,
            address=row.address,
            fingerprint=row.fingerprint,
            certificate=row.certificate,
            not_before=row.not_before,
            not_after=row.not_after,
            active=row.active,
            added_at=row.added_at,
        )


class SigningKeyList(BaseModel):
    items: list[SigningKeyOut]
