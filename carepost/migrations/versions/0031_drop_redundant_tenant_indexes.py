"""contacts, contact identifiers, consent records, suppressions, messages: no index on
``tenant_id`` alone

Revision ID: 0031
Revises: 0028
Create Date: 2026-12-05 20:20:00.000000

Each of these tables has other indexes (or unique constraints) that lead with
``tenant_id``; they serve a tenant's reads and the cascade from ``tenants``. The index
on the column alone only cost a B-tree insert for every row the bulk paths write
(CSV and FHIR imports, the batch API, campaigns).
"""

from __future__ import annotations

from alembic import op

revision = "0031"
down_revision = "0028"
branch_labels = None
depends_on = None

TABLES = ("contacts", "contact_identifiers", "consent_records", "suppressions", "messages")


def upgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_tenant_id", table_name=table)


def downgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
