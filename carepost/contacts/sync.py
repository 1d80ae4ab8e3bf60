"""Keeping the side tables of contacts in step, set-based: tokens, identifiers, stages.

Each function takes many contacts at once and issues a bounded number of
statements (a DELETE per chunk of ids, one executemany INSERT), so a batch of
10,000 contacts costs a handful of round trips, not 10,000. They run inside the
caller's transaction: the contact rows and their tokens commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from carepost.contacts.models import ContactIdentifier, ContactStageHistory, ContactToken
from carepost.contacts.tokens import FieldType, field_tokens
from carepost.contacts.values import FieldSpec
from carepost.core.database import new_id
from carepost.crypto.keyring import TenantKeys

# Standard fields that segments query through tokens (the others are identifiers
# with their own blind indexes, or names that nobody segments on).
BIRTH_DATE = FieldSpec("birth_date", FieldType.DATE, granularity="day")
# Well under SQLite's bound-parameter limit, and a sensible statement size on PostgreSQL.
CHUNK = 2000
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def contact_tokens(
    keys: TenantKeys,
    schema: Mapping[str, FieldSpec],
    custom: Mapping[str, Any] | None,
    birth_date: str | None,
) -> list[tuple[str, str]]:
    """(field key, token) of every queryable value of one contact."""
    pairs: list[tuple[str, str]] = []
    if birth_date:
        pairs += [
            ("birth_date", token)
            for token in field_tokens(
                keys.blind_index, "birth_date", BIRTH_DATE.type, "day", birth_date, sealed=False
            )
        ]
    for key, value in (custom or {}).items():
        spec = schema.get(key)
        if spec is None:  # a deleted field's stale value: not queryable
            continue
        pairs += [
            (key, token)
            for token in field_tokens(
                keys.blind_index, key, spec.type, spec.granularity, value, sealed=spec.sealed
            )
        ]
    return pairs


def replace_tokens(
    session: Session,
    keys: TenantKeys,
    schema: Mapping[str, FieldSpec],
    contacts: Iterable[tuple[uuid.UUID, Mapping[str, Any] | None, str | None]],
) -> int:
    """Replace all tokens of these contacts (id, custom values, birth date); returns
    how many tokens were written."""
    rows: list[dict[str, Any]] = []
    ids: list[uuid.UUID] = []
    for contact_id, custom, birth_date in contacts:
        ids.append(contact_id)
        rows += [
            {
                "tenant_id": keys.tenant_id,
                "contact_id": contact_id,
                "field_key": key,
                "token": token,
            }
            for key, token in contact_tokens(keys, schema, custom, birth_date)
        ]
    for part in chunks(ids):
        session.execute(
            delete(ContactToken).where(
                ContactToken.tenant_id == keys.tenant_id, ContactToken.contact_id.in_(part)
            )
        )
    for batch in chunks(rows, 5000):
        session.execute(insert(ContactToken), list(batch))
    return len(rows)


def replace_identifiers(
    session: Session,
    keys: TenantKeys,
    changes: Iterable[tuple[uuid.UUID, Mapping[str, str | None]]],
) -> None:
    """Set (or clear, for None) external ids of kind -> value per contact."""
    by_kind: dict[str, list[uuid.UUID]] = {}
    rows: list[dict[str, Any]] = []
    for contact_id, identifiers in changes:
        for kind, value in identifiers.items():
            by_kind.setdefault(kind, []).append(contact_id)
            if value is not None:
                rows.append(
                    {
                        "id": new_id(),
                        "tenant_id": keys.tenant_id,
                        "contact_id": contact_id,
                        "kind": kind,
                        "value": value,
                        "value_index": identifier_token(keys, kind, value),
                    }
                )
    for kind, ids in by_kind.items():
        for part in chunks(ids):
            session.execute(
                delete(ContactIdentifier).where(
                    ContactIdentifier.tenant_id == keys.tenant_id,
                    ContactIdentifier.kind == kind,
                    ContactIdentifier.contact_id.in_(part),
                )
            )
    for batch in chunks(rows, 5000):
        session.execute(insert(ContactIdentifier), list(batch))


def identifier_token(keys: TenantKeys, kind: str, value: str) -> str:
    return keys.blind_index(f"contact_identifiers.{kind}", value)


def identifiers_of(
    session: Session, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    """Every external id of these contacts (decrypted: the caller audits the view)."""
    found: dict[uuid.UUID, dict[str, str]] = {}
    for part in chunks(contact_ids):
        query = select(ContactIdentifier).where(
            ContactIdentifier.tenant_id == tenant_id, ContactIdentifier.contact_id.in_(part)
        )
        for row in session.scalars(query):
            found.setdefault(row.contact_id, {})[row.kind] = row.value
    return found


def record_stage_changes(
    session: Session,
    tenant_id: uuid.UUID,
    changes: Iterable[tuple[uuid.UUID, str, str | None]],
    *,
    at: datetime,
) -> None:
    """Append (contact id, new stage, previous stage) to the stage history."""
    rows = [
        {
            "id": new_id(),
            "tenant_id": tenant_id,
            "contact_id": contact_id,
            "stage": stage,
            "previous_stage": previous,
            "changed_at": at,
        }
        for contact_id, stage, previous in changes
    ]
    for batch in chunks(rows, 5000):
        session.execute(insert(ContactStageHistory), list(batch))
