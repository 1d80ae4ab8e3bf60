"""campaigns: A/B tests of a stored template's variants

Revision ID: 0014
Revises: 0008
Create Date: 2026-12-04 12:45:00.000000

A campaign whose template has variants may test them: ``ab_metric`` (opens or
clicks; NULL = no test), ``ab_window_hours``, the phase (``testing`` while the test
portion is queued, ``waiting`` until ``ab_test_until``, ``decided`` once the winner
goes to the holdout), the winner and when and on what figures it was chosen.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("ab_metric", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("ab_window_hours", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ab_phase", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("ab_test_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ab_winner", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("ab_decided_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ab_results", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        for name in (
            "ab_results",
            "ab_decided_at",
            "ab_winner",
            "ab_test_until",
            "ab_phase",
            "ab_window_hours",
            "ab_metric",
        ):
            batch.drop_column(name)
