"""Upserting contacts in batches (API, EHR/CRM/CDP sync): idempotent and set-based.

A batch is keyed by one unique identifier (email, external id, MRN or CRM id).
Each item is checked on its own; an invalid item, an item whose key repeats in
the batch, or one that would take another contact's unique identifier gets its
own error while the others apply. The writes are a bounded number of statements
whatever the batch size: one SELECT per identifier kind to resolve keys, one
bulk write for new contacts (COPY on PostgreSQL, :func:`carepost.core.bulk.write_rows`),
one executemany UPDATE per set of changed columns, then the side tables
(:mod:`carepost.contacts.sync`). Checking the items (:func:`prepare_batch`) may
happen beforehand, in another process (:func:`upsert_prepared`). Sending the same batch
twice changes nothing the second time (every item comes back ``unchanged``).

Audit: one ``contact.batch_upsert`` event per batch with counts and field names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from carepost.audit import service as audit
from carepost.contacts import custom_fields, stages, sync
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.models import Contact
from carepost.contacts.prepare import (
    IDENTIFIER_KINDS,
    MATCH_KEYS,
    PreparationContext,
    PreparedBatch,
    PreparedContact,
    match_pointer,
    prepare_batch,
)
from carepost.contacts.sealing import (
    INDEX_COLUMNS,
    SealedBatch,
    SealedContact,
    claim_token,
    claims_of,
)
from carepost.contacts.values import FieldSpec, merge_custom
from carepost.core.bulk import write_rows
from carepost.core.database import new_ids, utcnow
from carepost.core.errors import Conflict, FieldError, ValidationFailed
from carepost.crypto.keyring import TenantKeys

MAX_BATCH = 10_000
CONTACT_TABLE: Table = Contact.__table__  # type: ignore[assignment]
IDENTIFIER_TABLE = sync.IDENTIFIER_TABLE
CONTACT_COLUMNS = tuple(column.name for column in CONTACT_TABLE.c)
UPDATE_COLUMNS = tuple(name for name in CONTACT_COLUMNS if name not in ("id", "tenant_id"))
# Columns an upsert may write (everything but id, tenant and created_at).
STANDARD_NAMES = tuple(STANDARD_FIELDS)


@dataclass
class ItemResult:
    index: int
    status: str  # created, updated, unchanged, error
    id: uuid.UUID | None = None
    errors: list[FieldError] = field(default_factory=list)


@dataclass
class _Item:
    index: int
    prepared: PreparedContact
    match_token: str
    # claim name (unique standard field or identifier kind) -> token, computed once
    claims: dict[str, str] = field(default_factory=dict)
    existing: dict[str, Any] | None = None  # the stored row, decrypted
    target_id: uuid.UUID | None = None
    # The item sealed ahead as a new contact (an import's batch), if it was.
    sealed: SealedContact | None = None


def _owners(
    session: Session, tenant_id: uuid.UUID, claim: str, tokens: Sequence[str]
) -> dict[str, uuid.UUID]:
    """token -> the contact holding that unique identifier now."""
    owners: dict[str, uuid.UUID] = {}
    key: ColumnElement[Any]
    owner: ColumnElement[Any]
    if claim in IDENTIFIER_KINDS:
        key, owner = IDENTIFIER_TABLE.c.value_index, IDENTIFIER_TABLE.c.contact_id
        conditions = [IDENTIFIER_TABLE.c.tenant_id == tenant_id, IDENTIFIER_TABLE.c.kind == claim]
    else:
        key, owner = CONTACT_TABLE.c[INDEX_COLUMNS[claim]], CONTACT_TABLE.c.id
        conditions = [CONTACT_TABLE.c.tenant_id == tenant_id]
    postgres = session.get_bind().dialect.name == "postgresql"
    for part in sync.chunks(sorted(set(tokens))):
        if postgres:
            # One probe of the unique index per token. A plain IN-list lets the planner
            # scan the whole tenant through the (tenant, kind) prefix when statistics
            # lag behind a bulk load, and once psycopg prepares the statement the generic
            # plan compares every row with every token: minutes per batch at 100k rows.
            probe = (
                func.unnest(bindparam("tokens", list(part), type_=ARRAY(String)))
                .table_valued("token")
                .render_derived()
            )
            found = select(owner).where(*conditions, key == probe.c.token).scalar_subquery()
            query = select(probe.c.token, found)
        else:
            query = select(key, owner).where(*conditions, key.in_(part))
        owners.update(
            {token: contact_id for token, contact_id in session.execute(query) if contact_id}
        )
    return owners


def _load_rows(
    session: Session, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    for part in sync.chunks(sorted(set(ids))):
        query = select(CONTACT_TABLE).where(
            CONTACT_TABLE.c.tenant_id == tenant_id, CONTACT_TABLE.c.id.in_(part)
        )
        rows.update({row.id: dict(row._mapping) for row in session.execute(query)})
    return rows


def _new_row(
    keys: TenantKeys,
    prepared: PreparedContact,
    claims: Mapping[str, str],
    now: datetime,
    contact_id: uuid.UUID,
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": contact_id, "tenant_id": keys.tenant_id, "created_at": now}
    row |= {name: prepared.standard.get(name) for name in STANDARD_NAMES}
    row["custom"] = merge_custom(None, prepared.custom) or None
    row["journey_stage"] = prepared.attributes.get("journey_stage") or "new"
    row["language"] = prepared.attributes.get("language")
    row["timezone"] = prepared.attributes.get("timezone")
    row["updated_at"] = None
    _set_indexes(keys, row, INDEX_COLUMNS, claims)
    return row


def _sealed_row(
    keys: TenantKeys,
    prepared: PreparedContact,
    sealed: SealedContact,
    now: datetime,
    contact_id: uuid.UUID,
) -> dict[str, Any]:
    """:func:`_new_row` with the encrypted columns and blind indexes sealed ahead."""
    row: dict[str, Any] = {"id": contact_id, "tenant_id": keys.tenant_id, "created_at": now}
    row |= sealed.columns
    row["journey_stage"] = prepared.attributes.get("journey_stage") or "new"
    row["language"] = prepared.attributes.get("language")
    row["timezone"] = prepared.attributes.get("timezone")
    row["updated_at"] = None
    return row


def _set_indexes(
    keys: TenantKeys,
    row: dict[str, Any],
    names: Iterable[str],
    claims: Mapping[str, str],
) -> None:
    """Recompute the blind indexes of ``names`` in ``row`` (reusing the item's claims)."""
    for name in names:
        value = row[name]
        token = (claims.get(name) or claim_token(keys, name, value)) if value else None
        row[INDEX_COLUMNS[name]] = token


def _changed_row(
    keys: TenantKeys,
    stored: Mapping[str, Any],
    prepared: PreparedContact,
    claims: Mapping[str, str],
) -> dict[str, Any] | None:
    """The stored row with the changes applied, or None if nothing changes."""
    row = dict(stored)
    row |= prepared.standard
    row["custom"] = merge_custom(stored["custom"], prepared.custom) or None
    row |= {name: value for name, value in prepared.attributes.items() if name != "journey_stage"}
    if prepared.attributes.get("journey_stage"):
        row["journey_stage"] = prepared.attributes["journey_stage"]
    # Only the fields sent can change; the others keep their stored index.
    _set_indexes(keys, row, [name for name in prepared.standard if name in INDEX_COLUMNS], claims)
    if row == dict(stored):
        return None
    return row


def load_context(session: Session, tenant_id: uuid.UUID) -> PreparationContext:
    """The tenant's fields and stages, to check a batch against (:func:`prepare_batch`)."""
    return PreparationContext(
        custom_fields.load_schema(session, tenant_id), stages.stage_keys(session, tenant_id)
    )


def upsert_contacts(
    session: Session,
    keys: TenantKeys,
    items: Sequence[Mapping[str, Any]],
    *,
    match: str,
    actor: audit.Actor,
    now: datetime | None = None,
) -> list[ItemResult]:
    """Create or update each item, matched on ``match``; one result per item, in order."""
    _check_request(match, len(items))
    context = load_context(session, keys.tenant_id)
    batch = prepare_batch(items, context, now=now or utcnow())
    return _upsert(session, keys, batch, match=match, actor=actor)


def upsert_prepared(
    session: Session,
    keys: TenantKeys,
    batch: PreparedBatch,
    *,
    match: str,
    actor: audit.Actor,
    sealed: SealedBatch | None = None,
) -> list[ItemResult]:
    """:func:`upsert_contacts` for a batch checked beforehand by :func:`prepare_batch`
    (an import prepares the next batch in a worker process while this one writes).

    The same results, writes and audit as :func:`upsert_contacts` with the raw items;
    a batch checked against fields or stages that changed since is refused (409), to
    be prepared again. ``sealed``: the batch's new contacts sealed ahead
    (:func:`carepost.contacts.sealing.seal_batch`, against the same fields), used if
    the tenant's active key version is still the one they were sealed with.
    """
    _check_request(match, len(batch.items))
    if load_context(session, keys.tenant_id) != batch.context:
        raise Conflict(
            "the contact fields or journey stages changed while this batch was prepared; "
            "prepare it again"
        )
    if sealed is not None and sealed.version != keys.active_version:
        sealed = None
    return _upsert(session, keys, batch, match=match, actor=actor, sealed=sealed)


def _check_request(match: str, size: int) -> None:
    if match not in MATCH_KEYS:
        raise ValidationFailed(f"match on one of {', '.join(MATCH_KEYS)}", field="match")
    if size > MAX_BATCH:
        raise ValidationFailed(f"a batch holds at most {MAX_BATCH} items", field="items")


def _upsert(
    session: Session,
    keys: TenantKeys,
    batch: PreparedBatch,
    *,
    match: str,
    actor: audit.Actor,
    sealed: SealedBatch | None = None,
) -> list[ItemResult]:
    now = batch.now
    tenant_id = keys.tenant_id
    schema = batch.context.schema
    results = [ItemResult(index, "error") for index in range(len(batch.items))]
    pending: list[_Item] = []
    for index, prepared in enumerate(batch.items):
        if not isinstance(prepared, PreparedContact):
            results[index].errors = prepared
            continue
        value = prepared.match_value(match)
        if not value:
            results[index].errors = [
                FieldError(match_pointer(match), f"each item needs its {match}: the batch key")
            ]
            continue
        ahead = sealed.items[index] if sealed is not None else None
        claims = ahead.claims if ahead is not None else claims_of(prepared, keys)
        pending.append(_Item(index, prepared, claims[match], claims, sealed=ahead))

    pending = _drop_duplicate_keys(pending, results, match)
    sync.refresh_statistics(session, [CONTACT_TABLE, IDENTIFIER_TABLE, sync.TOKEN_TABLE])
    owners = _owners(session, tenant_id, match, [item.match_token for item in pending])
    stored = _load_rows(session, tenant_id, list(owners.values()))
    for item in pending:
        owner = owners.get(item.match_token)
        if owner is not None:
            item.target_id, item.existing = owner, stored[owner]
    pending = _drop_identifier_conflicts(session, keys, pending, results, {match: owners})

    try:
        with session.begin_nested():
            _write(session, keys, schema, pending, results, now)
    except IntegrityError:
        raise Conflict(
            "another writer changed these contacts at the same time; "
            "send the batch again (upserts are idempotent)"
        ) from None

    counts = {status: 0 for status in ("created", "updated", "unchanged", "error")}
    for result in results:
        counts[result.status] += 1
    fields = sorted({name for item in pending for name in item.prepared.field_names})
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.batch_upsert",
        object_type="contact",
        object_id=str(results[0].id) if len(results) == 1 and results[0].id else "",
        details={"match": match, "fields": fields, **counts},
    )
    return results


def _wake_field_waits(
    session: Session,
    tenant_id: uuid.UUID,
    updates: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    now: datetime,
) -> None:
    """Wake workflow runs waiting for a change of these fields (``field:<key>``): one
    indexed lookup per changed key for the whole batch, never a scan of the runs."""
    changed: dict[str, list[uuid.UUID]] = {}
    for existing, row in updates:
        before, after = existing.get("custom") or {}, row.get("custom") or {}
        keys = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        keys |= {
            name
            for name, value in row.items()
            if name != "custom" and name != "updated_at" and existing.get(name) != value
        }
        for key in keys:
            changed.setdefault(key, []).append(row["id"])
    if changed:
        from carepost.workflows.wakeups import on_fields_changed

        on_fields_changed(session, tenant_id, changed, now)


def _drop_duplicate_keys(
    pending: list[_Item], results: list[ItemResult], match: str
) -> list[_Item]:
    seen: dict[str, list[int]] = {}
    for item in pending:
        seen.setdefault(item.match_token, []).append(item.index)
    kept = []
    for item in pending:
        indexes = seen[item.match_token]
        if len(indexes) == 1:
            kept.append(item)
            continue
        others = [str(i) for i in indexes if i != item.index]
        which = f"items {', '.join(others)} have" if len(others) > 1 else f"item {others[0]} has"
        results[item.index].errors = [
            FieldError(
                match_pointer(match),
                f"{which} the same {match}: send each contact once per batch",
            )
        ]
    return kept


def _drop_identifier_conflicts(
    session: Session,
    keys: TenantKeys,
    pending: list[_Item],
    results: list[ItemResult],
    known: Mapping[str, Mapping[str, uuid.UUID]],
) -> list[_Item]:
    """Refuse items that would take a unique identifier another contact holds, in the
    database or in another item of the batch. ``known``: owners already looked up
    (the match key's), by claim."""
    claims: dict[str, dict[str, list[_Item]]] = {}
    for item in pending:
        for claim, token in item.claims.items():
            claims.setdefault(claim, {}).setdefault(token, []).append(item)
    bad: dict[int, FieldError] = {}
    for claim, by_token in claims.items():
        if claim in known:
            owners = known[claim]
        else:
            owners = _owners(session, keys.tenant_id, claim, list(by_token))
        label = claim.replace("_", " ")
        pointer = match_pointer(claim)
        for token, claimants in by_token.items():
            targets = {item.target_id or item.index for item in claimants}
            if len(targets) > 1:
                for item in claimants:
                    bad.setdefault(
                        item.index,
                        FieldError(pointer, f"another item of this batch has this {label}"),
                    )
            owner = owners.get(token)
            for item in claimants:
                if owner is not None and owner != item.target_id:
                    bad.setdefault(
                        item.index, FieldError(pointer, f"another contact has this {label}")
                    )
    for index, error in bad.items():
        results[index].errors = [error]
    return [item for item in pending if item.index not in bad]


def _write(
    session: Session,
    keys: TenantKeys,
    schema: Mapping[str, FieldSpec],
    pending: list[_Item],
    results: list[ItemResult],
    now: datetime,
) -> None:
    inserts: list[dict[str, Any]] = []
    sealed_inserts: list[dict[str, Any]] = []
    sealed_tokens: list[tuple[uuid.UUID, list[tuple[str, str]]]] = []
    sealed_identifiers: list[tuple[uuid.UUID, list[tuple[str, bytes, str]]]] = []
    updates: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
    # Side rows of created contacts are only inserted; those of updated ones replaced.
    new_tokens: list[tuple[uuid.UUID, Any, Any]] = []
    retokenize: list[tuple[uuid.UUID, Any, Any]] = []
    new_identifiers: list[tuple[uuid.UUID, Mapping[str, str | None]]] = []
    identifier_changes: list[tuple[uuid.UUID, Mapping[str, str | None]]] = []
    stage_changes: list[tuple[uuid.UUID, str, str | None]] = []
    targets = [item.target_id for item in pending if item.target_id is not None]
    current_ids = sync.identifiers_of(session, keys.tenant_id, targets)
    fresh_ids = iter(new_ids(len(pending) - len(targets)))
    for item in pending:
        result = results[item.index]
        if item.existing is None and item.sealed is not None:
            row = _sealed_row(keys, item.prepared, item.sealed, now, next(fresh_ids))
            sealed_inserts.append(row)
            result.status, result.id = "created", row["id"]
            sealed_tokens.append((row["id"], item.sealed.tokens))
            stage_changes.append((row["id"], row["journey_stage"], None))
            if item.sealed.identifiers:
                sealed_identifiers.append((row["id"], item.sealed.identifiers))
            continue
        if item.existing is None:
            row = _new_row(keys, item.prepared, item.claims, now, next(fresh_ids))
            inserts.append(row)
            result.status, result.id = "created", row["id"]
            new_tokens.append((row["id"], row["custom"], row["birth_date"]))
            stage_changes.append((row["id"], row["journey_stage"], None))
            if item.prepared.identifiers:
                new_identifiers.append((row["id"], item.prepared.identifiers))
            continue
        else:
            assert item.target_id is not None
            result.id = item.target_id
            changed_ids = {
                kind: value
                for kind, value in item.prepared.identifiers.items()
                if current_ids.get(item.target_id, {}).get(kind) != value
            }
            changed = _changed_row(keys, item.existing, item.prepared, item.claims)
            if changed is None and not changed_ids:
                result.status = "unchanged"
                continue
            result.status = "updated"
            if changed is not None:
                changed["updated_at"] = now
                updates.append((item.existing, changed))
                if (changed["custom"], changed["birth_date"]) != (
                    item.existing["custom"],
                    item.existing["birth_date"],
                ):
                    retokenize.append((item.target_id, changed["custom"], changed["birth_date"]))
                if changed["journey_stage"] != item.existing["journey_stage"]:
                    stage_changes.append(
                        (item.target_id, changed["journey_stage"], item.existing["journey_stage"])
                    )
            if changed_ids:  # the prepared item stays as it was: a batch may be sent again
                identifier_changes.append((item.target_id, changed_ids))
    _wake_field_waits(session, keys.tenant_id, updates, now)
    write_rows(
        session,
        CONTACT_TABLE,
        CONTACT_COLUMNS,
        [[row[name] for name in CONTACT_COLUMNS] for row in inserts],
    )
    write_rows(
        session,
        CONTACT_TABLE,
        CONTACT_COLUMNS,
        [[row[name] for name in CONTACT_COLUMNS] for row in sealed_inserts],
        presealed=True,
    )
    sync.write_sealed_identifiers(session, keys.tenant_id, sealed_identifiers)
    sync.write_tokens(session, keys.tenant_id, sealed_tokens, created=True)
    _update_rows(session, updates)
    sync.replace_identifiers(session, keys, new_identifiers, created=True)
    sync.replace_identifiers(session, keys, identifier_changes)
    sync.replace_tokens(session, keys, schema, new_tokens, created=True)
    sync.replace_tokens(session, keys, schema, retokenize)
    sync.record_stage_changes(session, keys.tenant_id, stage_changes, at=now)


def _update_rows(
    session: Session, updates: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
) -> None:
    """UPDATE each (stored, changed) contact: one executemany per set of changed columns.

    An import changes the same few columns of every row, so this is one or two
    statements, and the PHI that did not change is not sealed again.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for stored, row in updates:
        changed = tuple(name for name in UPDATE_COLUMNS if row[name] != stored[name])
        groups.setdefault(changed, []).append(
            {"row_id": row["id"], **{name: row[name] for name in changed}}
        )
    # executemany: the SET clause comes from the keys of the parameter sets.
    statement = update(CONTACT_TABLE).where(CONTACT_TABLE.c.id == bindparam("row_id"))
    for rows in groups.values():
        for part in sync.chunks(rows, 5000):
            session.connection().execute(statement, list(part))
