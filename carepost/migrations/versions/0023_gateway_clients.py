"""gateway: the SMTP gateway's clients (credentials, networks, certificate
fingerprints, sender domains, limits)

Revision ID: 0023
Revises: 0024
Create Date: 2026-12-04 20:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_clients",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=200), nullable=False),
        sa.Column("networks", sa.JSON(), nullable=False),
        sa.Column("cert_fingerprints", sa.JSON(), nullable=False),
        sa.Column("sender_domains", sa.JSON(), nullable=False),
        sa.Column("max_message_bytes", sa.Integer(), nullable=False),
        sa.Column("max_recipients", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by_type", sa.String(length=20), nullable=False),
        sa.Column("created_by_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_gateway_clients_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_clients")),
        sa.UniqueConstraint("username", name=op.f("uq_gateway_clients_username")),
    )
    with op.batch_alter_table("gateway_clients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_clients_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_clients_tenant_id"))
    op.drop_table("gateway_clients")
