"""e2ee key directory: recipients' S/MIME certificates and OpenPGP keys, the
tenant's signing keys (addresses, key material and private keys encrypted)

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-04 16:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"],
        ["tenants.id"],
        name=op.f(f"fk_{table}_tenant_id_tenants"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "recipient_keys",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("address", sa.LargeBinary(), nullable=False),
        sa.Column("address_index", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("material", sa.LargeBinary(), nullable=False),
        sa.Column("algorithm", sa.String(length=40), nullable=False),
        sa.Column("can_encrypt", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("recipient_keys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient_keys")),
        sa.UniqueConstraint(
            "tenant_id",
            "address_index",
            "kind",
            "fingerprint",
            name=op.f("uq_recipient_keys_tenant_id_address_index_kind_fingerprint"),
        ),
    )
    with op.batch_alter_table("recipient_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipient_keys_lookup", ["tenant_id", "address_index"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_recipient_keys_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "tenant_signing_keys",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("tenant_signing_keys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_signing_keys")),
        sa.UniqueConstraint(
            "tenant_id",
            "kind",
            "fingerprint",
            name=op.f("uq_tenant_signing_keys_tenant_id_kind_fingerprint"),
        ),
    )
    with op.batch_alter_table("tenant_signing_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tenant_signing_keys_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tenant_signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_signing_keys_tenant_id"))
    op.drop_table("tenant_signing_keys")
    with op.batch_alter_table("recipient_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recipient_keys_tenant_id"))
        batch_op.drop_index("ix_recipient_keys_lookup")
    op.drop_table("recipient_keys")
