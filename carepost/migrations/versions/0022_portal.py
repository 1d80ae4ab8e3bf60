"""portal: items waiting for pickup, one-time codes, replies, access events, settings

Revision ID: 0022
Revises: 0023
Create Date: 2026-12-04 20:20:36.147122

The secure pickup portal (issue 6, docs/portal.md). Chained after the gateway's
clients (0023), merged the same day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_settings",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("notice_subject", sa.String(length=200), nullable=False),
        sa.Column("expiry_days", sa.Integer(), nullable=False),
        sa.Column("logo_url", sa.String(length=500), nullable=False),
        sa.Column("brand_color", sa.String(length=7), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_portal_settings")),
    )
    op.create_table(
        "portal_items",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("notice_id", sa.Uuid(), nullable=True),
        sa.Column("to_index", sa.String(length=40), nullable=False),
        sa.Column("to_address", sa.LargeBinary(), nullable=False),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("attachment_meta", sa.LargeBinary(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recalled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_portal_items_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_items_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_items")),
        sa.UniqueConstraint(
            "tenant_id", "message_id", name=op.f("uq_portal_items_tenant_id_message_id")
        ),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_items_token_hash")),
    )
    with op.batch_alter_table("portal_items", schema=None) as batch_op:
        batch_op.create_index("ix_portal_items_expiry", ["state", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_portal_items_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "portal_challenges",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["portal_items.id"],
            name=op.f("fk_portal_challenges_item_id_portal_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_challenges_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_challenges")),
    )
    with op.batch_alter_table("portal_challenges", schema=None) as batch_op:
        batch_op.create_index("ix_portal_challenges_item", ["item_id", "created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_portal_challenges_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "portal_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["portal_items.id"],
            name=op.f("fk_portal_events_item_id_portal_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_events")),
    )
    with op.batch_alter_table("portal_events", schema=None) as batch_op:
        batch_op.create_index("ix_portal_events_item", ["item_id", "id"], unique=False)

    op.create_table(
        "portal_replies",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["portal_items.id"],
            name=op.f("fk_portal_replies_item_id_portal_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_portal_replies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_replies")),
    )
    with op.batch_alter_table("portal_replies", schema=None) as batch_op:
        batch_op.create_index("ix_portal_replies_item", ["item_id", "created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_portal_replies_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_replies_tenant_id"))
        batch_op.drop_index("ix_portal_replies_item")

    op.drop_table("portal_replies")
    with op.batch_alter_table("portal_events", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_events_item")

    op.drop_table("portal_events")
    with op.batch_alter_table("portal_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_challenges_tenant_id"))
        batch_op.drop_index("ix_portal_challenges_item")

    op.drop_table("portal_challenges")
    with op.batch_alter_table("portal_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_items_tenant_id"))
        batch_op.drop_index("ix_portal_items_expiry")

    op.drop_table("portal_items")
    op.drop_table("portal_settings")
