"""The per-tenant key directory: recipients' S/MIME certificates and OpenPGP
public keys, and the tenant's own signing identities.

A recipient's address is PHI (a patient's email), and so is the key material,
which names it: both are stored encrypted under the tenant's data key; lookups
go through a blind index of the normalized address (like contacts' email).
The facts a policy needs (kind, validity, revocation, whether carepost can
encrypt to it) are plain columns, so ``usable_keys`` filters in SQL.

The tenant's signing private keys are secrets, sealed under the tenant's data
key (labels ``tenant_signing_keys.private_key``), decrypted only to sign.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, UTCDateTime, utcnow
from carepost.crypto.fields import EncryptedString
from carepost.tenancy.models import TenantOwned

KINDS = ("smime", "openpgp")
SOURCES = ("upload", "received", "wkd", "gateway")


class RecipientKey(IdMixin, TenantOwned, Base):
    """One recipient's certificate (S/MIME) or public key (OpenPGP) for one address."""

    __tablename__ = "recipient_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "address_index", "kind", "fingerprint"),
        Index("ix_recipient_keys_lookup", "tenant_id", "address_index"),
    )

    kind: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(EncryptedString("recipient_keys.address"))
    address_index: Mapped[str] = mapped_column(String(40))
    # S/MIME: SHA-256 of the certificate's DER; OpenPGP: the primary key fingerprint.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # PEM certificate or ASCII-armored public key (it names the address: encrypted).
    material: Mapped[str] = mapped_column(EncryptedString("recipient_keys.material"))
    algorithm: Mapped[str] = mapped_column(String(40))
    # False for EC S/MIME certificates (no ECDH key agreement in the builder yet).
    can_encrypt: Mapped[bool] = mapped_column(Boolean, default=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(20))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The last time the same key was uploaded, received or found again.
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TenantSigningKey(IdMixin, TenantOwned, Base):
    """The tenant's S/MIME signing certificate and key, or its OpenPGP key, for a
    sender address (or ``*`` for every address of the tenant)."""

    __tablename__ = "tenant_signing_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "fingerprint"),)

    kind: Mapped[str] = mapped_column(String(10))
    # The tenant's own sender address (not PHI), lower-case, or "*".
    address: Mapped[str] = mapped_column(String(320))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # PEM certificate (and chain) or the armored public certificate: public.
    certificate: Mapped[str] = mapped_column(Text)
    chain: Mapped[str] = mapped_column(Text, default="")
    # PKCS#8 PEM or the armored OpenPGP secret key, sealed under the tenant's data key.
    private_key: Mapped[str] = mapped_column(EncryptedString("tenant_signing_keys.private_key"))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
