"""contact_tokens: drop the foreign key to contacts; the deletions delete tokens themselves

Revision ID: 0017
Revises: 0019
Create Date: 2026-12-04 16:40:00.000000

Checking ``contact_tokens.contact_id`` against ``contacts`` cost a trigger, an index
probe and a key-share lock per token row: about 25 µs of server CPU per imported
contact (ten tokens each), a third of the token write (docs/imports.md). The
guarantee it gave, no token outliving its contact, is now kept by the code: every
path that deletes a contact deletes its tokens in the same transaction
(``carepost.contacts.service.delete_contact``, ``carepost.contacts.merge``), and
tests/contacts/test_token_orphans.py checks that none is left behind. Downgrading
deletes any orphan first, then restores the key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0019"
branch_labels = None
depends_on = None

NAME = "fk_contact_tokens_contact_id_contacts"


def upgrade() -> None:
    with op.batch_alter_table("contact_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(NAME, type_="foreignkey")


def downgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM contact_tokens WHERE NOT EXISTS"
            " (SELECT 1 FROM contacts WHERE contacts.id = contact_tokens.contact_id)"
        )
    )
    with op.batch_alter_table("contact_tokens", schema=None) as batch_op:
        batch_op.create_foreign_key(NAME, "contacts", ["contact_id"], ["id"], ondelete="CASCADE")
