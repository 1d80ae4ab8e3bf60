"""contact side tables: drop the tenant foreign keys that the contact's already implies

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 07:40:00.000000

``contact_tokens``, ``contact_identifiers`` and ``contact_stage_history`` rows
belong to a contact (``contact_id`` references ``contacts.id`` ON DELETE CASCADE)
whose own ``tenant_id`` references the tenant (ON DELETE CASCADE): deleting a
tenant already deletes them through their contact. Their second foreign key to
``tenants`` only cost a trigger and a key-share lock per inserted row, and a CSV
import writes about ten token rows per contact.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("contact_tokens", "contact_identifiers", "contact_stage_history")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_tenant_id_tenants", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_tenant_id_tenants",
                "tenants",
                ["tenant_id"],
                ["id"],
                ondelete="CASCADE",
            )
