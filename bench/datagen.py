"""The benchmark data set: a tenant "bench" with N contacts and M events, seeded.

``python -m bench datagen --contacts 1000000 --events 10000000 --seed 1
[--database URL]`` creates the data set, or reuses it when the database already
holds one of the same seed, scale and :data:`VERSION` (the marker is an audit
event ``bench.dataset`` of the tenant, written only once everything committed).
Benchmarks call :func:`ensure_dataset`; import benchmarks take the same people
as upsert items from :func:`contact_items`.

The rows are exactly what the services write — ciphertext sealed by the column
types under the tenant's keys, blind indexes and segmentation tokens computed by
:mod:`carepost.contacts.sync`, values normalized by
:func:`carepost.contacts.values.normalize_custom` — but written in bulk:
PostgreSQL ``COPY`` (psycopg 3), SQLite ``executemany`` in one transaction per
chunk with relaxed pragmas (see :func:`_bulk_mode` for the index and key-check
shortcuts). Forked processes build the rows of the next chunks while this one
writes; memory stays flat (a few chunks of 20,000 people and their events in
flight). ``ANALYZE`` runs at the end (autovacuum may be off).

Reproducible: person ``i`` is the same for a seed whatever the size asked for
(:mod:`bench.people`); memberships, consent and events are the same for the same
seed, contacts and events. Tenant keys are wrapped by the master key in
``$CAREPOST_MASTER_KEY_FILE`` (``var/bench/master.key`` by default), which a
reused data set needs again.

What it holds (see :mod:`bench.people` for the distributions):

* custom fields ``zip`` (string), ``gender`` (choice), ``insurance`` (choice),
  ``conditions`` (multi-choice of e11, i10, j45, e78, f32), ``a1c`` (number,
  0.1) and ``last_visit`` (date, day); birth dates tokenized by day;
* lists ``diabetes-program`` (~20%, mostly diabetics), ``newsletter`` (~35%,
  a tenth of them left again), ``flu-shot-2025`` (~15%), ``care-management`` (~5%);
* email/marketing consent for ~60% (a grant; ~8% of those revoked later);
* journey stages with their history (created as ``new``, moved on later);
* events over the two years before :data:`bench.people.AS_OF`: email_opened,
  email_clicked, portal_login, appointment_kept, form_submitted, spread over
  contacts with a heavy tail (a quarter never engage).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

from sqlalchemy import Index, Table, create_engine, delete, event, select, text
from sqlalchemy.orm import Session

from bench.people import (
    AS_OF,
    BLOCK,
    CONDITIONS,
    GENDERS,
    INSURANCE,
    Person,
    block_rng,
    people_block,
    seeded_id,
)
from bench.people import contact_items as contact_items
from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, events, lists, sync
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.models import Contact, ContactIdentifier, ContactStageHistory
from carepost.contacts.values import FieldSpec, normalize_custom
from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

# Bump when the generated data changes shape: an older data set is then rebuilt.
VERSION = 1
MARKER = "bench.dataset"
SLUG = "bench"
# People per transaction (a multiple of the people block, so blocks never split).
CHUNK = 2 * BLOCK
FIELDS: tuple[dict[str, Any], ...] = (
    {"key": "zip", "label": "ZIP code", "type": "string"},
    {"key": "gender", "label": "Gender", "type": "choice", "choices": list(GENDERS)},
    {"key": "insurance", "label": "Insurance", "type": "choice", "choices": list(INSURANCE)},
    {
        "key": "conditions",
        "label": "Conditions",
        "type": "multi_choice",
        "choices": list(CONDITIONS),
    },
    {"key": "a1c", "label": "HbA1c (%)", "type": "number", "granularity": "0.1"},
    {"key": "last_visit", "label": "Last visit", "type": "date", "granularity": "day"},
)
LISTS = ("diabetes-program", "newsletter", "flu-shot-2025", "care-management")
# Event kinds and their share of all events.
EVENT_KINDS = (
    ("email_opened", 44),
    ("portal_login", 24),
    ("email_clicked", 12),
    ("appointment_kept", 11),
    ("form_submitted", 9),
)
EVENT_SOURCES = {
    "email_opened": "email",
    "email_clicked": "email",
    "portal_login": "portal",
    "appointment_kept": "ehr",
    "form_submitted": "web_form",
}
# Events happen more by day than by night (UTC hours shifted for US time zones).
HOUR_WEIGHTS = (2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 8, 8, 8, 7, 6, 4, 3)
EVENT_DAYS = 730
CONSENT_SOURCES = (("web_form", 50), ("import", 30), ("paper", 15), ("preference_center", 5))

Progress = Callable[[str], None]


@dataclass
class Dataset:
    """What the generator created: the tenant and what a benchmark needs to query it."""

    tenant_id: uuid.UUID
    contacts: int
    events: int
    seed: int
    list_ids: dict[str, uuid.UUID]
    kind_ids: dict[str, int]
    as_of: datetime = AS_OF

    def info(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "contacts": self.contacts,
            "events": self.events,
            "seed": self.seed,
            "as_of": self.as_of.isoformat(),
            "lists": {name: str(list_id) for name, list_id in self.list_ids.items()},
            "event_kinds": dict(self.kind_ids),
        }


# --- writing rows fast ---------------------------------------------------------------


class RowWriter:
    """Bulk insert of plain tuples into one table: COPY on PostgreSQL, executemany on SQLite.

    Values arrive as Python objects (UUIDs, aware datetimes, bytes); SQLite gets
    them in the storage format SQLAlchemy uses there (32 hex digits, naive UTC text).
    """

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"

    def write(self, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        raw = self.connection.connection.driver_connection
        names = ", ".join(columns)
        if self.postgres:
            statement = f"COPY {table.name} ({names}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in columns)
        cursor = raw.cursor()  # type: ignore[union-attr]
        cursor.executemany(
            f"INSERT INTO {table.name} ({names}) VALUES ({marks})",
            (tuple(_sqlite_value(value) for value in row) for row in rows),
        )
        cursor.close()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


# --- the rows of one chunk -------------------------------------------------------------


class ChunkRows:
    """Every row of one chunk of people, built in memory and then written table by table."""

    def __init__(self) -> None:
        self.contacts: list[tuple[Any, ...]] = []
        self.identifiers: list[tuple[Any, ...]] = []
        self.tokens: list[tuple[Any, ...]] = []
        self.stages: list[tuple[Any, ...]] = []
        self.members: list[tuple[Any, ...]] = []
        self.records: list[tuple[Any, ...]] = []
        self.current: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []


CONTACT_COLUMNS = (
    "id",
    "tenant_id",
    "created_at",
    "email",
    "email_index",
    "phone",
    "phone_index",
    "first_name",
    "last_name",
    "birth_date",
    "custom",
    "journey_stage",
    "language",
    "timezone",
)
IDENTIFIER_COLUMNS = ("id", "tenant_id", "contact_id", "kind", "value", "value_index")
TOKEN_COLUMNS = ("tenant_id", "contact_id", "field_key", "token")
STAGE_COLUMNS = ("id", "tenant_id", "contact_id", "stage", "previous_stage", "changed_at")
MEMBER_COLUMNS = ("tenant_id", "list_id", "contact_id", "joined_at", "left_at")
RECORD_COLUMNS = (
    "id",
    "tenant_id",
    "created_at",
    "contact_id",
    "channel",
    "purpose",
    "status",
    "source",
    "captured_at",
    "recorded_by_type",
    "recorded_by_id",
)
CURRENT_COLUMNS = (
    "contact_id",
    "channel",
    "purpose",
    "tenant_id",
    "status",
    "record_id",
    "captured_at",
)
EVENT_COLUMNS = ("tenant_id", "contact_id", "kind_id", "occurred_at", "source")


class Sealer:
    """Encrypts values exactly as the column types do (same labels, same serialization)."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        table = _table(Contact)
        self.types = {
            name: table.c[name].type
            for name in ("email", "phone", "first_name", "last_name", "birth_date", "custom")
        }
        self.identifier_type = _table(ContactIdentifier).c.value.type

    def contact(self, name: str, value: Any) -> bytes | None:
        sealed: bytes | None = self.types[name].process_bind_param(value, self.dialect)
        return sealed

    def identifier(self, value: str) -> bytes:
        sealed: bytes = self.identifier_type.process_bind_param(value, self.dialect)
        return sealed


class MemoKeys(TenantKeys):
    """The tenant's keys with blind indexes memoized: segmentation tokens repeat a lot
    (a few choices, 730 visit days, ~36,000 birth dates), and each is still computed
    once by :meth:`TenantKeys.blind_index` itself, so the tokens are the service's."""

    _memo: dict[tuple[str, str], str]

    @classmethod
    def of(cls, keys: TenantKeys) -> MemoKeys:
        memo = cls(keys.tenant_id, keys.data_keys, keys.active_version, keys.index_key)
        memo._memo = {}
        return memo

    def blind_index(self, label: str, value: str) -> str:
        token = self._memo.get((label, value))
        if token is None:
            if len(self._memo) > 1_000_000:  # stays small for categorical fields anyway
                self._memo.clear()
            token = self._memo[(label, value)] = super().blind_index(label, value)
        return token


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = max(int((end - start).total_seconds()), 1)
    return start + timedelta(seconds=rng.randint(0, span))


def build_chunk(
    keys: TenantKeys,
    token_keys: MemoKeys,
    schema: dict[str, FieldSpec],
    sealer: Sealer,
    dataset: Dataset,
    chunk: list[Person],
    event_quota: int,
    block_number: int,
) -> ChunkRows:
    """The rows of ``chunk`` and of ``event_quota`` events spread over its people."""
    tenant_id = keys.tenant_id
    rows = ChunkRows()
    rng = block_rng(dataset.seed, block_number, "rows")
    email_label = STANDARD_FIELDS["email"].index_label
    phone_label = STANDARD_FIELDS["phone"].index_label
    for person in chunk:
        custom = normalize_custom(schema, person.custom, now=AS_OF)
        rows.contacts.append(
            (
                person.id,
                tenant_id,
                person.created_at,
                sealer.contact("email", person.email),
                keys.blind_index(email_label, person.email) if person.email else None,
                sealer.contact("phone", person.phone),
                keys.blind_index(phone_label, person.phone) if person.phone else None,
                sealer.contact("first_name", person.first_name),
                sealer.contact("last_name", person.last_name),
                sealer.contact("birth_date", person.birth_date),
                sealer.contact("custom", custom),
                person.journey_stage,
                person.language,
                person.timezone,
            )
        )
        if person.mrn:
            rows.identifiers.append(
                (
                    seeded_id(rng, person.created_at),
                    tenant_id,
                    person.id,
                    "mrn",
                    sealer.identifier(person.mrn),
                    sync.identifier_token(keys, "mrn", person.mrn),
                )
            )
        rows.tokens += [
            (tenant_id, person.id, key, token)
            for key, token in dict.fromkeys(
                sync.contact_tokens(token_keys, schema, custom, person.birth_date)
            )
        ]
        _stage_rows(rows, rng, tenant_id, person)
        _member_rows(rows, rng, tenant_id, person, dataset.list_ids)
        if person.email and rng.random() < 0.65:  # ~60% of all contacts
            _consent_rows(rows, rng, tenant_id, person)
    _event_rows(rows, rng, tenant_id, chunk, event_quota, dataset.kind_ids)
    return rows


def _stage_rows(rows: ChunkRows, rng: random.Random, tenant_id: uuid.UUID, person: Person) -> None:
    # Created as "new" (as the upsert path records it), moved on later.
    rows.stages.append(
        (seeded_id(rng, person.created_at), tenant_id, person.id, "new", None, person.created_at)
    )
    if person.journey_stage != "new":
        moved = _between(rng, person.created_at, AS_OF)
        rows.stages.append(
            (seeded_id(rng, moved), tenant_id, person.id, person.journey_stage, "new", moved)
        )


def _member_rows(
    rows: ChunkRows,
    rng: random.Random,
    tenant_id: uuid.UUID,
    person: Person,
    list_ids: dict[str, uuid.UUID],
) -> None:
    diabetic = "e11" in person.custom.get("conditions", ())
    chances = {
        "diabetes-program": 0.85 if diabetic else 0.12,
        "newsletter": 0.35,
        "flu-shot-2025": 0.15,
        "care-management": 0.15 if person.journey_stage == "at-risk" else 0.035,
    }
    for name, chance in chances.items():
        if rng.random() >= chance:
            continue
        joined = _between(rng, person.created_at, AS_OF)
        left = None
        if name == "newsletter" and rng.random() < 0.1:
            left = _between(rng, joined, AS_OF)
            if rng.random() < 0.3:  # came back: a closed stint, then a current one
                rows.members.append((tenant_id, list_ids[name], person.id, joined, left))
                joined, left = _between(rng, left, AS_OF), None
        rows.members.append((tenant_id, list_ids[name], person.id, joined, left))


def _consent_rows(
    rows: ChunkRows, rng: random.Random, tenant_id: uuid.UUID, person: Person
) -> None:
    sources, weights = zip(*CONSENT_SOURCES, strict=True)
    captured = _between(rng, person.created_at, AS_OF)
    grant_id = seeded_id(rng, captured)
    source = rng.choices(sources, weights=weights)[0]
    rows.records.append(
        (
            grant_id,
            tenant_id,
            captured,
            person.id,
            "email",
            "marketing",
            "granted",
            source,
            captured,
            "system",
            "",
        )
    )
    latest = ("granted", grant_id, captured)
    if rng.random() < 0.08:
        revoked = _between(rng, captured, AS_OF)
        revoke_id = seeded_id(rng, revoked)
        rows.records.append(
            (
                revoke_id,
                tenant_id,
                revoked,
                person.id,
                "email",
                "marketing",
                "revoked",
                "one_click",
                revoked,
                "recipient",
                "",
            )
        )
        latest = ("revoked", revoke_id, revoked)
    status, record_id, at = latest
    rows.current.append((person.id, "email", "marketing", tenant_id, status, record_id, at))


def _event_rows(
    rows: ChunkRows,
    rng: random.Random,
    tenant_id: uuid.UUID,
    chunk: list[Person],
    quota: int,
    kind_ids: dict[str, int],
) -> None:
    if quota <= 0 or not chunk:
        return
    weights = [person.activity for person in chunk]
    if not any(weights):
        weights = [1.0] * len(chunk)
    who = rng.choices(chunk, weights=weights, k=quota)
    kinds = rng.choices(
        [kind for kind, _ in EVENT_KINDS], weights=[w for _, w in EVENT_KINDS], k=quota
    )
    hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=quota)
    start = AS_OF - timedelta(days=EVENT_DAYS)
    base = start.timestamp()
    random_value = rng.random
    for person, kind, hour in zip(who, kinds, hours, strict=True):
        # Engagement grows over time: more recent days are likelier.
        day = int(EVENT_DAYS * random_value() ** 0.8)
        moment = base + day * 86400 + hour * 3600 + int(random_value() * 3600)
        rows.events.append(
            (
                tenant_id,
                person.id,
                kind_ids[kind],
                datetime.fromtimestamp(moment, UTC),
                EVENT_SOURCES[kind],
            )
        )


def write_chunk(session: Session, rows: ChunkRows, *, skip_key_checks: bool = False) -> None:
    """Write one chunk in the session's transaction. ``skip_key_checks`` (PostgreSQL
    superusers): no foreign key triggers for this transaction (see :func:`_bulk_mode`)."""
    writer = RowWriter(session)
    if skip_key_checks:
        session.execute(text("SET LOCAL session_replication_role = replica"))
    writer.write(_table(Contact), CONTACT_COLUMNS, rows.contacts)
    writer.write(sync.IDENTIFIER_TABLE, IDENTIFIER_COLUMNS, rows.identifiers)
    writer.write(sync.TOKEN_TABLE, TOKEN_COLUMNS, rows.tokens)
    writer.write(_table(ContactStageHistory), STAGE_COLUMNS, rows.stages)
    writer.write(_table(ListMembership), MEMBER_COLUMNS, rows.members)
    writer.write(_table(ConsentRecord), RECORD_COLUMNS, rows.records)
    writer.write(_table(ConsentCurrent), CURRENT_COLUMNS, rows.current)
    writer.write(_table(ContactEvent), EVENT_COLUMNS, rows.events)


# --- the data set ----------------------------------------------------------------------


def define_fields(session: Session, tenant_id: uuid.UUID) -> dict[str, FieldSpec]:
    """Create the data set's custom fields in a tenant (for import benchmarks too)."""
    existing = custom_fields.load_schema(session, tenant_id)
    for definition in FIELDS:
        if definition["key"] not in existing:
            custom_fields.create_field(session, tenant_id, actor=audit.SYSTEM, **definition)
    return custom_fields.load_schema(session, tenant_id)


def _marker(session: Session, tenant_id: uuid.UUID) -> dict[str, Any] | None:
    details = session.scalar(
        select(AuditEvent.details)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.action == MARKER)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    return dict(details) if details else None


def _wanted(contacts: int, events: int, seed: int) -> dict[str, Any]:
    return {"version": VERSION, "contacts": contacts, "events": events, "seed": seed}


def _existing(
    runtime: Runtime, slug: str, wanted: dict[str, Any], progress: Progress
) -> Dataset | None:
    """The data set already in the database, or None (an incomplete or different one
    under the same slug is deleted first)."""
    with runtime.database.session() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
        if tenant is None:
            return None
        marker = _marker(session, tenant.id)
        if marker is not None and all(marker.get(k) == v for k, v in wanted.items()):
            return Dataset(
                tenant_id=tenant.id,
                contacts=marker["contacts"],
                events=marker["events"],
                seed=marker["seed"],
                list_ids={k: uuid.UUID(v) for k, v in marker["lists"].items()},
                kind_ids=dict(marker["event_kinds"]),
            )
        progress(f"datagen: replacing the tenant {slug!r} (another or an incomplete data set)")
        # An interrupted PostgreSQL load leaves its indexes dropped; the cascade needs them.
        for index in _deferred_indexes():
            index.create(session.connection(), checkfirst=True)
        session.execute(delete(Tenant).where(Tenant.id == tenant.id))
    return None


def _prepare(runtime: Runtime, slug: str, contacts: int, events: int, seed: int) -> Dataset:
    with runtime.database.session() as session:
        tenant, keys = tenancy.create_tenant(
            session, runtime.keyring, slug=slug, name="Benchmark clinic"
        )
    with runtime.bound_session(keys) as session:
        define_fields(session, tenant.id)
        list_ids = {
            name: lists.create_list(
                session, tenant.id, name=name, description="", actor=audit.SYSTEM
            ).id
            for name in LISTS
        }
        kinds = events_kinds(session, tenant.id)
    return Dataset(tenant.id, contacts, events, seed, list_ids, kinds)


def events_kinds(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    found = events.ensure_kinds(session, tenant_id, {kind for kind, _ in EVENT_KINDS})
    return {key: kind.id for key, kind in found.items()}


# Secondary indexes rebuilt once after a PostgreSQL load instead of row by row
# (primary keys and unique indexes stay: they guard the data).
DEFERRED_INDEX_TABLES = (ContactEvent, ContactStageHistory, sync.ContactToken)


def _deferred_indexes() -> list[Index]:
    return [
        index
        for model in DEFERRED_INDEX_TABLES
        for index in _table(model).indexes
        if not index.unique
    ]


@contextmanager
def _bulk_mode(runtime: Runtime) -> Iterator[None]:
    """Loading fast; the data set can be rebuilt, so durability while loading does not matter.

    SQLite: no fsync, no per-row foreign key checks, a big page cache (pragmas are
    per connection and cannot change inside a transaction, so they are set when a
    connection opens; the pool is emptied before and after). PostgreSQL: secondary
    indexes of the big tables are dropped and built again at the end (a sort beats
    millions of random index inserts), and a superuser skips the per-row foreign
    key triggers (``session_replication_role``, see :func:`write_chunk`). Every id
    the generator writes comes from the same chunk or from the tenant's own lists
    and kinds, so the keys hold by construction; the read-back test checks them.
    """
    engine = runtime.database.engine
    if engine.dialect.name == "postgresql":
        indexes = _deferred_indexes()
        with engine.begin() as connection:
            for index in indexes:
                connection.execute(text(f'DROP INDEX IF EXISTS "{index.name}"'))
        try:
            yield
        finally:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
                for index in indexes:
                    index.create(connection, checkfirst=True)
        return

    def relax(dbapi_connection: Any, _record: Any) -> None:
        pragmas = ("synchronous=OFF", "cache_size=-262144", "temp_store=MEMORY", "foreign_keys=OFF")
        for pragma in pragmas:
            dbapi_connection.execute(f"PRAGMA {pragma}")

    event.listen(engine, "connect", relax)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", relax)
        engine.dispose()


@dataclass
class _Builder:
    """What building a chunk needs; forked builder processes inherit it."""

    keys: TenantKeys
    token_keys: MemoKeys
    schema: dict[str, FieldSpec]
    dataset: Dataset

    def build(self, chunk_start: int) -> ChunkRows:
        dataset = self.dataset
        chunk_end = min(chunk_start + CHUNK, dataset.contacts)
        # Exact integer shares: the chunks' quotas add up to the events asked for.
        quota = (
            dataset.events * chunk_end // dataset.contacts
            - dataset.events * chunk_start // dataset.contacts
        )
        block = chunk_start // BLOCK
        chunk = [
            person
            for number in range(block, (chunk_end - 1) // BLOCK + 1)
            for person in people_block(dataset.seed, number, chunk_end - number * BLOCK)
            if chunk_start <= person.index < chunk_end
        ]
        with bind_tenant_keys(self.keys):
            sealer = Sealer(None)
            return build_chunk(
                self.keys, self.token_keys, self.schema, sealer, dataset, chunk, quota, block
            )


_BUILDER: _Builder | None = None


def _build_in_worker(chunk_start: int) -> ChunkRows:
    assert _BUILDER is not None, "the builder is set before the pool forks"
    return _BUILDER.build(chunk_start)


def _built_chunks(builder: _Builder, workers: int) -> Iterator[ChunkRows]:
    """Chunks in order, built by ``workers`` forked processes (or here, for one), with
    at most a few chunks in flight so that memory stays flat."""
    starts = list(range(0, builder.dataset.contacts, CHUNK))
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            yield builder.build(start)
        return
    global _BUILDER
    _BUILDER = builder
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: deque[AsyncResult[ChunkRows]] = deque()
            for start in starts:
                pending.append(pool.apply_async(_build_in_worker, (start,)))
                if len(pending) > workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        _BUILDER = None


def _generate(runtime: Runtime, dataset: Dataset, progress: Progress, workers: int) -> None:
    started = time.perf_counter()
    with runtime.database.session() as session:
        keys = runtime.keyring.load(session, dataset.tenant_id)
        schema = custom_fields.load_schema(session, dataset.tenant_id)
    builder = _Builder(keys, MemoKeys.of(keys), schema, dataset)
    done_contacts = done_events = 0
    skip_key_checks = _is_postgres_superuser(runtime)
    with _bulk_mode(runtime):
        for rows in _built_chunks(builder, workers):
            with runtime.database.session() as session:
                write_chunk(session, rows, skip_key_checks=skip_key_checks)
            done_contacts += len(rows.contacts)
            done_events += len(rows.events)
            elapsed = time.perf_counter() - started
            progress(
                f"datagen: {done_contacts:,}/{dataset.contacts:,} contacts, "
                f"{done_events:,}/{dataset.events:,} events, {elapsed:.1f} s"
            )
    _analyze(runtime)
    with runtime.database.session() as session:
        audit.record(
            session,
            tenant_id=dataset.tenant_id,
            actor=audit.SYSTEM,
            action=MARKER,
            object_type="tenant",
            object_id=dataset.tenant_id,
            details=dataset.info(),
        )


def _is_postgres_superuser(runtime: Runtime) -> bool:
    engine = runtime.database.engine
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        query = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        return bool(connection.execute(query).scalar())


def _analyze(runtime: Runtime) -> None:
    """Fresh planner statistics: bulk loads leave them stale (and autovacuum may be off)."""
    engine = runtime.database.engine
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("ANALYZE"))
        else:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()


def ensure_dataset(
    runtime_or_url: Runtime | str,
    *,
    contacts: int,
    events: int,
    seed: int,
    slug: str = SLUG,
    progress: Progress = print,
    workers: int | None = None,
) -> tuple[uuid.UUID, dict[str, Any]]:
    """The tenant id and facts (lists, event kinds, reference date) of the data set,
    generating it unless the database holds it already. ``workers``: processes that
    build rows while this one writes (default: one per CPU)."""
    if contacts < 1 or events < 0:
        raise ValueError("at least one contact, and no negative number of events")
    if isinstance(runtime_or_url, Runtime):
        runtime = runtime_or_url
    else:
        runtime = open_runtime(runtime_or_url)
    try:
        wanted = _wanted(contacts, events, seed)
        found = _existing(runtime, slug, wanted, progress)
        if found is not None:
            progress(f"datagen: reusing the data set in tenant {slug!r} ({found.tenant_id})")
            return found.tenant_id, found.info() | {"generated_seconds": 0.0}
        started = time.perf_counter()
        dataset = _prepare(runtime, slug, contacts, events, seed)
        _generate(runtime, dataset, progress, workers or os.cpu_count() or 1)
        elapsed = time.perf_counter() - started
        return dataset.tenant_id, dataset.info() | {"generated_seconds": round(elapsed, 1)}
    finally:
        if runtime is not runtime_or_url:
            runtime.close()


def open_runtime(url: str) -> Runtime:
    """A runtime on ``url``, migrated, with a master key kept next to the data
    (``$CAREPOST_MASTER_KEY_FILE`` or ``var/bench/master.key``): a reused data set
    needs the key that wrapped its tenant keys."""
    key_file = Path(os.environ.get("CAREPOST_MASTER_KEY_FILE", "var/bench/master.key"))
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        init_key_file(key_file)
    overrides: dict[str, Any] = {"database_url": url, "master_key_file": key_file}
    schema = os.environ.get("CAREPOST_DATABASE_SCHEMA")
    if schema and not url.startswith("sqlite"):
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        admin.dispose()
        overrides["database_schema"] = schema
    runtime = build_runtime(load_settings(**overrides))
    migrations.upgrade(runtime.database.engine)
    return runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench datagen", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database",
        default=os.environ.get("CAREPOST_DATABASE_URL", "sqlite:///var/bench/datagen.db"),
        help="database URL (default: $CAREPOST_DATABASE_URL or var/bench/datagen.db)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="row-building processes (default: one per CPU)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tenant_id, info = ensure_dataset(
        args.database,
        contacts=args.contacts,
        events=args.events,
        seed=args.seed,
        workers=args.workers,
    )
    elapsed = time.perf_counter() - started
    print(
        f"datagen contacts={args.contacts} events={args.events} seed={args.seed} "
        f"tenant={tenant_id} seconds={elapsed:.1f} "
        f"generated={'yes' if info['generated_seconds'] else 'reused'}"
    )
    return 0
