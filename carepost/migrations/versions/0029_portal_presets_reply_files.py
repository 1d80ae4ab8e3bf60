"""portal: the question set at send time, files on replies, reply delivery by policy

Revision ID: 0029
Revises: 0025
Create Date: 2026-12-04 22:40:00.000000

``portal_presets`` holds the identity question a sender set with the message (the
question sealed, the answer as a keyed hash) until the message reaches the portal;
replies get their sealed files, the files' sealed names, a DLP summary and the
outbox message that delivered them; the settings get ``reply_delivery``
(docs/portal.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_presets",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("question", sa.LargeBinary(), nullable=False),
        sa.Column("answer_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_portal_presets_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_presets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_presets")),
        sa.UniqueConstraint(
            "tenant_id", "message_id", name=op.f("uq_portal_presets_tenant_id_message_id")
        ),
    )
    with op.batch_alter_table("portal_presets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_presets_tenant_id"), ["tenant_id"], unique=False
        )
    with op.batch_alter_table("portal_replies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attachments", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("attachment_meta", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("dlp", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("delivery_id", sa.Uuid(), nullable=True))
    with op.batch_alter_table("portal_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reply_delivery", sa.String(length=12), nullable=False, server_default="notice"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_settings", schema=None) as batch_op:
        batch_op.drop_column("reply_delivery")
    with op.batch_alter_table("portal_replies", schema=None) as batch_op:
        batch_op.drop_column("delivery_id")
        batch_op.drop_column("dlp")
        batch_op.drop_column("attachment_meta")
        batch_op.drop_column("attachments")
    with op.batch_alter_table("portal_presets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_presets_tenant_id"))
    op.drop_table("portal_presets")
