"""workflow_triggers: how each workflow is entered on its own (list join, segment
entry, date milestone, form submission, a named event)

Revision ID: 0024
Revises: 0018
Create Date: 2026-12-04 19:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_triggers",
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("ref", sa.String(length=120), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_workflow_triggers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_triggers_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_workflow_triggers")),
    )
    op.create_index(
        op.f("ix_workflow_triggers_tenant_id"), "workflow_triggers", ["tenant_id"], unique=False
    )
    op.create_index(
        "ix_workflow_triggers_kind_ref",
        "workflow_triggers",
        ["tenant_id", "kind", "ref"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_triggers_kind_ref", table_name="workflow_triggers")
    op.drop_index(op.f("ix_workflow_triggers_tenant_id"), table_name="workflow_triggers")
    op.drop_table("workflow_triggers")
