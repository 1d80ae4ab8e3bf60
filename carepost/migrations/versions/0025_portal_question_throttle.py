"""portal: the sender's question (sealed) and answer hash; hashed client address on events

Revision ID: 0025
Revises: 0021
Create Date: 2026-12-04 21:05:00.000000

The sender-set question as an alternative to the emailed code, and the per-client
address throttle across items (docs/portal.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("question", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("answer_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("portal_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_portal_events_client", ["tenant_id", "client_hash", "occurred_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_events", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_events_client")
        batch_op.drop_column("client_hash")
    with op.batch_alter_table("portal_items", schema=None) as batch_op:
        batch_op.drop_column("answer_hash")
        batch_op.drop_column("question")
