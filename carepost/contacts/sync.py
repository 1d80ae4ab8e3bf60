"""Keeping the side tables of contacts in step, set-based: tokens, identifiers, stages.

Each function takes many contacts at once and issues a bounded number of
statements (a DELETE per chunk of ids, multi-row INSERTs), so a batch of 10,000
contacts costs a handful of round trips, not 10,000. They run inside the
caller's transaction: the contact rows and their tokens commit together.

Contacts created in the same unit of work have no side rows yet, so the callers
pass them as ``created`` and no DELETE runs for them. Every statement keeps its
``tenant_id`` condition (tenancy is enforced in SQL, not only by how ids were found),
even though a stale-statistics plan may then prefer the tenant-prefixed index on
updates of a freshly bulk-loaded table; updates are the rarer path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, delete, insert, select
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
# Rows per INSERT call; SQLAlchemy's insertmanyvalues splits each into multi-row VALUES.
INSERT_CHUNK = 5000
TOKEN_TABLE: Table = ContactToken.__table__  # type: ignore[assignment]
IDENTIFIER_TABLE: Table = ContactIdentifier.__table__  # type: ignore[assignment]
STAGE_HISTORY_TABLE: Table = ContactStageHistory.__table__  # type: ignore[assignment]
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT many rows through Core as multi-row VALUES statements.

    Core skips the ORM's per-row bookkeeping, and ``RETURNING`` makes SQLAlchemy
    use insertmanyvalues (about 1,000 rows per statement) on PostgreSQL too, where
    a plain executemany would run one INSERT per row.
    """
    statement = insert(table).returning(table.c[next(iter(table.primary_key)).name])
    connection = session.connection()
    for batch in chunks(rows, INSERT_CHUNK):
        connection.execute(statement, list(batch))


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
    *,
    created: bool = False,
) -> int:
    """Replace all tokens of these contacts (id, custom values, birth date); returns
    how many tokens were written. ``created``: the contacts are new in this unit of
    work and have no tokens to delete."""
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
    if not created:
        for part in chunks(ids):
            session.execute(
                delete(TOKEN_TABLE).where(
                    TOKEN_TABLE.c.tenant_id == keys.tenant_id, TOKEN_TABLE.c.contact_id.in_(part)
                )
            )
    insert_rows(session, TOKEN_TABLE, rows)
    return len(rows)


def replace_identifiers(
    session: Session,
    keys: TenantKeys,
    changes: Iterable[tuple[uuid.UUID, Mapping[str, str | None]]],
    *,
    created: bool = False,
) -> None:
    """Set (or clear, for None) external ids of kind -> value per contact. ``created``:
    the contacts are new in this unit of work and hold no identifiers yet."""
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
    if not created:
        for kind, ids in by_kind.items():
            for part in chunks(ids):
                session.execute(
                    delete(IDENTIFIER_TABLE).where(
                        IDENTIFIER_TABLE.c.tenant_id == keys.tenant_id,
                        IDENTIFIER_TABLE.c.contact_id.in_(part),
                        IDENTIFIER_TABLE.c.kind == kind,
                    )
                )
    insert_rows(session, IDENTIFIER_TABLE, rows)


def identifier_token(keys: TenantKeys, kind: str, value: str) -> str:
    return keys.blind_index(f"contact_identifiers.{kind}", value)


def identifiers_of(
    session: Session, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    """Every external id of these contacts (decrypted: the caller audits the view)."""
    found: dict[uuid.UUID, dict[str, str]] = {}
    for part in chunks(contact_ids):
        query = select(
            IDENTIFIER_TABLE.c.contact_id, IDENTIFIER_TABLE.c.kind, IDENTIFIER_TABLE.c.value
        ).where(IDENTIFIER_TABLE.c.tenant_id == tenant_id, IDENTIFIER_TABLE.c.contact_id.in_(part))
        for row in session.execute(query):
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
    insert_rows(session, STAGE_HISTORY_TABLE, rows)
