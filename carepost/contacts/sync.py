"""Keeping the side tables of contacts in step, set-based: tokens, identifiers, stages.

Each function takes many contacts at once and issues a bounded number of
statements (a DELETE per chunk of ids, one bulk write: :func:`write_rows`), so a
batch of 10,000 contacts costs a handful of round trips, not 10,000. They run inside the
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

from sqlalchemy import String, Table, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from carepost.contacts.models import ContactIdentifier, ContactStageHistory, ContactToken
from carepost.contacts.tokens import FieldType, field_tokens
from carepost.contacts.values import FieldSpec
from carepost.core.bulk import CopyText, write_rows
from carepost.core.database import new_ids
from carepost.crypto.keyring import TenantKeys

# Standard fields that segments query through tokens (the others are identifiers
# with their own blind indexes, or names that nobody segments on).
BIRTH_DATE = FieldSpec("birth_date", FieldType.DATE, granularity="day")
# Well under SQLite's bound-parameter limit, and a sensible statement size on PostgreSQL.
CHUNK = 2000
TOKEN_TABLE: Table = ContactToken.__table__  # type: ignore[assignment]
IDENTIFIER_TABLE: Table = ContactIdentifier.__table__  # type: ignore[assignment]
STAGE_HISTORY_TABLE: Table = ContactStageHistory.__table__  # type: ignore[assignment]
TOKEN_COLUMNS = ("tenant_id", "contact_id", "field_key", "token")
IDENTIFIER_COLUMNS = ("id", "tenant_id", "contact_id", "kind", "value", "value_index")
STAGE_HISTORY_COLUMNS = ("id", "tenant_id", "contact_id", "stage", "previous_stage", "changed_at")
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


TokenMemo = dict[tuple[str, type, Any], list[tuple[str, str]]]


# Statistics that describe an empty (or never analyzed: -1) table, with more than 50
# rows written since: the case where the planner goes wrong. Once a table has
# statistics, the planner scales their row count by the table's current size, and
# autovacuum keeps them fresh.
_EMPTY_STATISTICS = text(
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.schemaname = current_schema() AND s.relname = ANY(:names)"
    " AND c.reltuples < 1 AND s.n_mod_since_analyze > 50"
).bindparams(bindparam("names", type_=ARRAY(String)))


def refresh_statistics(session: Session, tables: Sequence[Table]) -> None:
    """PostgreSQL: ANALYZE those of ``tables`` whose statistics still say "empty"
    although rows were written since.

    A batch looks contacts up by id and deletes tokens by contact, always with the
    tenant condition; on statistics that still describe an empty table the planner
    answers that by scanning the whole tenant through the tenant-prefixed index
    (half a second per 2,000 contacts at 10,000 contacts, growing with the tenant).
    Autovacuum may lag behind an import, or be off: so the first batch written to an
    empty table analyzes it. Later batches do not: the planner scales the row count
    of existing statistics by the table's current size, and re-analyzing at
    autovacuum's own rule (50 + 10 % of the rows changed) cost about forty ANALYZEs
    of three tables over a million-row import.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    names = [table.name for table in tables]
    for name in session.scalars(_EMPTY_STATISTICS, {"names": names}).all():
        table = next(table for table in tables if table.name == name)
        preparer = session.get_bind().dialect.identifier_preparer
        session.execute(text(f"ANALYZE {preparer.format_table(table)}"))


def contact_tokens(
    keys: TenantKeys,
    schema: Mapping[str, FieldSpec],
    custom: Mapping[str, Any] | None,
    birth_date: str | None,
    memo: TokenMemo | None = None,
) -> list[tuple[str, str]]:
    """(field key, token) of every queryable value of one contact.

    ``memo`` (one per batch and schema) remembers the tokens of each value seen:
    a batch repeats the same condition codes, genders, days and A1c buckets, and
    bucketing a value costs more than the HMAC it feeds.
    """
    memo = {} if memo is None else memo
    pairs: list[tuple[str, str]] = []
    if birth_date:
        pairs += _value_tokens(keys, memo, "birth_date", BIRTH_DATE, birth_date)
    for key, value in (custom or {}).items():
        spec = schema.get(key)
        if spec is None:  # a deleted field's stale value: not queryable
            continue
        pairs += _value_tokens(keys, memo, key, spec, value)
    return pairs


def _value_tokens(
    keys: TenantKeys, memo: TokenMemo, key: str, spec: FieldSpec, value: Any
) -> list[tuple[str, str]]:
    # The type is part of the key: True == 1 == 1.0 in a dict, but not as values.
    memo_key = (key, type(value), tuple(value) if isinstance(value, list) else value)
    pairs = memo.get(memo_key)
    if pairs is None:
        tokens = field_tokens(
            keys.bucket_token, key, spec.type, spec.granularity, value, sealed=spec.sealed
        )
        pairs = memo[memo_key] = [(key, token) for token in tokens]
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
    memo: TokenMemo = {}
    return write_tokens(
        session,
        keys.tenant_id,
        [
            (contact_id, contact_tokens(keys, schema, custom, birth_date, memo))
            for contact_id, custom, birth_date in contacts
        ],
        created=created,
    )


def write_tokens(
    session: Session,
    tenant_id: uuid.UUID,
    contacts: Sequence[tuple[uuid.UUID, Sequence[tuple[str, str]]]],
    *,
    created: bool = False,
) -> int:
    """Replace the tokens of these contacts by the (field key, token) pairs given
    (computed by :func:`contact_tokens`); returns how many were written."""
    rows: list[tuple[uuid.UUID, uuid.UUID, str, str]] | CopyText
    if session.get_bind().dialect.name == "postgresql":
        # Field keys are [a-z][a-z0-9_]* and tokens hex or "*": nothing to escape.
        lines: list[str] = []
        for contact_id, pairs in contacts:
            prefix = f"{tenant_id}\t{contact_id}\t"
            lines += [f"{prefix}{key}\t{token}\n" for key, token in pairs]
        rows = CopyText("".join(lines), len(lines))
    else:
        rows = [
            (tenant_id, contact_id, key, token)
            for contact_id, pairs in contacts
            for key, token in pairs
        ]
    if not created:
        ids = [contact_id for contact_id, _pairs in contacts]
        for part in chunks(ids):
            session.execute(
                delete(TOKEN_TABLE).where(
                    TOKEN_TABLE.c.tenant_id == tenant_id, TOKEN_TABLE.c.contact_id.in_(part)
                )
            )
    write_rows(session, TOKEN_TABLE, TOKEN_COLUMNS, rows)
    return rows.count if isinstance(rows, CopyText) else len(rows)


def write_sealed_identifiers(
    session: Session,
    tenant_id: uuid.UUID,
    identifiers: Sequence[tuple[uuid.UUID, Sequence[tuple[str, bytes, str]]]],
) -> None:
    """Insert the external ids of new contacts, sealed ahead: (contact id, [(kind,
    sealed value, blind index)]) (:mod:`carepost.contacts.sealing`)."""
    values = [(contact_id, *sealed) for contact_id, items in identifiers for sealed in items]
    rows = [
        (row_id, tenant_id, *value)
        for row_id, value in zip(new_ids(len(values)), values, strict=True)
    ]
    write_rows(session, IDENTIFIER_TABLE, IDENTIFIER_COLUMNS, rows, presealed=True)


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
    values: list[tuple[uuid.UUID, str, str, str]] = []
    for contact_id, identifiers in changes:
        for kind, value in identifiers.items():
            by_kind.setdefault(kind, []).append(contact_id)
            if value is not None:
                values.append((contact_id, kind, value, identifier_token(keys, kind, value)))
    rows = [
        (row_id, keys.tenant_id, *value)
        for row_id, value in zip(new_ids(len(values)), values, strict=True)
    ]
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
    write_rows(session, IDENTIFIER_TABLE, IDENTIFIER_COLUMNS, rows)


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
    changes = list(changes)
    rows = [
        (row_id, tenant_id, contact_id, stage, previous, at)
        for row_id, (contact_id, stage, previous) in zip(
            new_ids(len(changes)), changes, strict=True
        )
    ]
    write_rows(session, STAGE_HISTORY_TABLE, STAGE_HISTORY_COLUMNS, rows)
