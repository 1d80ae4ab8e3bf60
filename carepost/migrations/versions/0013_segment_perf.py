"""segment performance and import resume: the line count at an import job's position

Revision ID: 0013
Revises: 0007
Create Date: 2026-12-04 07:30:00.000000

``import_jobs.position_line``: the physical lines of the file up to ``position``,
so that a resumed import seeks to its position instead of reading the file's
beginning again to number its lines (0 for the jobs already there: unknown, and
those still count).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(
            sa.Column("position_line", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("position_line")
