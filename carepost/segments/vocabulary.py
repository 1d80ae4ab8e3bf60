"""What a tenant's segment rules may refer to, read from the database in a few queries.

Rules name fields by key, lists by id, event kinds by key, consent purposes and
journey stages; each is checked against the tenant's own (another organization's
list id is simply unknown), so a parsed rule can only touch the tenant's data.
The product's own event kinds (``email.opened``...) are valid for every tenant,
recorded yet or not: a kind's row is only created with its first event.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.consent.service import purposes
from carepost.contacts.activity_models import ContactList, EventKind
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.events import BUILT_IN_KINDS
from carepost.contacts.stages import stage_keys
from carepost.segments.nodes import UNRECORDED_KIND_ID, Vocabulary


def load_vocabulary(session: Session, tenant_id: uuid.UUID) -> Vocabulary:
    list_ids = session.scalars(select(ContactList.id).where(ContactList.tenant_id == tenant_id))
    kinds = session.execute(
        select(EventKind.key, EventKind.id).where(EventKind.tenant_id == tenant_id)
    )
    return Vocabulary(
        fields=load_schema(session, tenant_id),
        list_ids=frozenset(list_ids),
        event_kinds={key: UNRECORDED_KIND_ID for key in BUILT_IN_KINDS}
        | {key: kind_id for key, kind_id in kinds},
        purposes=purposes(session, tenant_id),
        stages=stage_keys(session, tenant_id),
    )
