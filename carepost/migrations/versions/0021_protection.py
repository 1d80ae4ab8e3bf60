"""protection: the decision recorded on each message, and what is known of domains' TLS

Revision ID: 0021
Revises: 0022
Create Date: 2026-12-04 19:40:00.000000

``messages`` gains the protection decision of its last preparation (method, TLS
requirement, reason codes: detector names and rule codes, never content).
``domain_tls`` caches per recipient domain its MTA-STS policy (RFC 8461: id, mode,
mx patterns, max_age), whether DANE TLSA records are usable (RFC 7672) and whether
STARTTLS was seen on a past delivery. Domain names only: no tenant data.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("protection_method", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("protection_tls", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("protection_reasons", sa.JSON(), nullable=True))
    op.create_table(
        "domain_tls",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("mta_sts_id", sa.String(length=64), nullable=False),
        sa.Column("mta_sts_mode", sa.String(length=10), nullable=False),
        sa.Column("mta_sts_mx", sa.JSON(), nullable=False),
        sa.Column("mta_sts_max_age", sa.Integer(), nullable=False),
        sa.Column("mta_sts_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dane_usable", sa.Boolean(), nullable=False),
        sa.Column("starttls_seen", sa.Boolean(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_domain_tls")),
    )


def downgrade() -> None:
    op.drop_table("domain_tls")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("protection_reasons")
        batch_op.drop_column("protection_tls")
        batch_op.drop_column("protection_method")
