"""dlp and policy: per-tenant protection policy documents and DLP rules

Revision ID: 0019
Revises: 0014
Create Date: 2026-12-04 16:30:00.000000

``policy_documents`` holds one policy document (JSON, no PHI) per tenant with its
revision; ``dlp_rules`` the tenant's keyword dictionaries (terms encrypted) and MRN
patterns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0014"
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
        "policy_documents",
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_type", sa.String(length=20), nullable=False),
        sa.Column("updated_by_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("policy_documents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_documents")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_policy_documents_tenant_id")),
    )
    with op.batch_alter_table("policy_documents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_policy_documents_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "dlp_rules",
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("terms", sa.LargeBinary(), nullable=True),
        sa.Column("pattern", sa.String(length=200), nullable=True),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("phi", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("dlp_rules"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlp_rules")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_dlp_rules_tenant_id_name")),
    )
    with op.batch_alter_table("dlp_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dlp_rules_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dlp_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dlp_rules_tenant_id"))
    op.drop_table("dlp_rules")
    with op.batch_alter_table("policy_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_documents_tenant_id"))
    op.drop_table("policy_documents")
