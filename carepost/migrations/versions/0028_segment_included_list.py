"""segments: the list of contacts added to a segment by hand (by workflows)

Revision ID: 0028
Revises: 0033
Create Date: 2026-12-05 00:20:00.000000

A dynamic segment is a rule; the workflows' Add to Segment step adds contacts to the
segment's *included list*, a static list whose members the segment takes in besides
its rule (docs/segments.md, docs/workflows.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("include_list_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            "fk_segments_include_list_id_lists",
            "lists",
            ["include_list_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_constraint("fk_segments_include_list_id_lists", type_="foreignkey")
        batch_op.drop_column("include_list_id")
