"""consent: consent records and current state, topics, suppression list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"],
        ["tenants.id"],
        name=op.f(f"fk_{table}_tenant_id_tenants"),
        ondelete="CASCADE",
    )


def _contact_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["contact_id"],
        ["contacts.id"],
        name=op.f(f"fk_{table}_contact_id_contacts"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "consent_records",
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("evidence", sa.LargeBinary(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_by_type", sa.String(length=20), nullable=False),
        sa.Column("recorded_by_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _contact_fk("consent_records"),
        _tenant_fk("consent_records"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_records_contact",
            ["tenant_id", "contact_id", "channel", "purpose", "captured_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_consent_records_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "consent_current",
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        _contact_fk("consent_current"),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["consent_records.id"],
            name=op.f("fk_consent_current_record_id_consent_records"),
            ondelete="CASCADE",
        ),
        _tenant_fk("consent_current"),
        sa.PrimaryKeyConstraint(
            "contact_id", "channel", "purpose", name=op.f("pk_consent_current")
        ),
    )
    with op.batch_alter_table("consent_current", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_current_segment",
            ["tenant_id", "channel", "purpose", "status", "contact_id"],
            unique=False,
        )

    op.create_table(
        "consent_topics",
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("consent_topics"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_topics")),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_consent_topics_tenant_id_key")),
    )
    with op.batch_alter_table("consent_topics", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_topics_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("address", sa.LargeBinary(), nullable=False),
        sa.Column("address_index", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("created_by_type", sa.String(length=20), nullable=False),
        sa.Column("created_by_id", sa.String(length=64), nullable=False),
        sa.Column("created_by_label", sa.String(length=320), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("suppressions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint(
            "tenant_id", "address_index", name=op.f("uq_suppressions_tenant_id_address_index")
        ),
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suppressions_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suppressions_tenant_id"))
    op.drop_table("suppressions")
    with op.batch_alter_table("consent_topics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_topics_tenant_id"))
    op.drop_table("consent_topics")
    with op.batch_alter_table("consent_current", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_current_segment")
    op.drop_table("consent_current")
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_records_tenant_id"))
        batch_op.drop_index("ix_consent_records_contact")
    op.drop_table("consent_records")
