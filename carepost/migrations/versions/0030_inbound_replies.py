"""gateway: inbound secure replies (the organization's route, each reply received)

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-04 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_routes",
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls_mode", sa.String(length=10), nullable=False),
        sa.Column("ca_certificate", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_inbound_routes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_routes")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_inbound_routes_tenant_id")),
    )
    with op.batch_alter_table("inbound_routes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_routes_tenant_id"), ["tenant_id"], unique=False
        )
    op.create_table(
        "inbound_replies",
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("mail_from", sa.LargeBinary(), nullable=False),
        sa.Column("recipients", sa.LargeBinary(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("decrypted", sa.Boolean(), nullable=False),
        sa.Column("signature", sa.String(length=20), nullable=False),
        sa.Column("signer_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_inbound_replies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_replies")),
    )
    with op.batch_alter_table("inbound_replies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_replies_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index("ix_inbound_replies_due", ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbound_replies", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_replies_due")
        batch_op.drop_index(batch_op.f("ix_inbound_replies_tenant_id"))
    op.drop_table("inbound_replies")
    with op.batch_alter_table("inbound_routes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_routes_tenant_id"))
    op.drop_table("inbound_routes")
