"""workflow_trigger_baseline: a segment-entry trigger's members when it was set to
skip existing members (they are enrolled only after leaving and entering again)

Revision ID: 0033
Revises: 0030
Create Date: 2026-12-05 01:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_trigger_baseline",
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_workflow_trigger_baseline_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_trigger_baseline_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workflow_id", "contact_id", name=op.f("pk_workflow_trigger_baseline")
        ),
    )
    op.create_index(
        op.f("ix_workflow_trigger_baseline_tenant_id"),
        "workflow_trigger_baseline",
        ["tenant_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_workflow_trigger_baseline_tenant_id"), table_name="workflow_trigger_baseline"
    )
    op.drop_table("workflow_trigger_baseline")
