"""Rebuilding a tenant's segmentation tokens from the contacts' encrypted values.

Tokens are derived data (docs/contacts-data.md): when the way values are
tokenized changes — as when dates gained the tokens of their month and year, so
that a date range is sent as its calendar cover — the tokens stored before must
be rebuilt, or the segments would miss those contacts. This reads the contacts in
id order, a batch per transaction (decrypting their custom values and birth date
with the tenant's keys), and replaces their tokens through
:func:`carepost.contacts.sync.replace_tokens`, the same code every write uses.
Run it with ``carepost contacts rebuild-tokens --tenant SLUG``; it can be
stopped and run again at any time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select

from carepost.audit import service as audit
from carepost.contacts import custom_fields, sync
from carepost.contacts.models import Contact
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys

BATCH = 2000


def rebuild_tokens(
    runtime: Runtime,
    keys: TenantKeys,
    *,
    actor: audit.Actor,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Replace the tokens of every contact of the tenant; returns how many contacts."""
    after: uuid.UUID | None = None
    done = 0
    while True:
        with runtime.bound_session(keys) as session:
            schema = custom_fields.load_schema(session, keys.tenant_id)
            query = (
                select(Contact.id, Contact.custom, Contact.birth_date)
                .where(Contact.tenant_id == keys.tenant_id)
                .order_by(Contact.id)
                .limit(batch)
            )
            if after is not None:
                query = query.where(Contact.id > after)
            rows = session.execute(query).all()
            if not rows:
                break
            sync.replace_tokens(
                session, keys, schema, [(row.id, row.custom, row.birth_date) for row in rows]
            )
        after = rows[-1].id
        done += len(rows)
        if progress is not None:
            progress(done)
    with runtime.database.session() as session:
        audit.record(
            session,
            tenant_id=keys.tenant_id,
            actor=actor,
            action="contact.tokens_rebuilt",
            object_type="tenant",
            object_id=keys.tenant_id,
            details={"contacts": done},
        )
    return done
