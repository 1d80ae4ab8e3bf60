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
chunk with relaxed pragmas (see :func:`bench.bulk_load.bulk_mode` for the index and key-check
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
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, select, text
from sqlalchemy.orm import Session

from bench.bulk_load import analyze, bulk_mode, deferred_indexes, is_postgres_superuser
from bench.dataset_rows import (
    EVENT_KINDS,
    LISTS,
    VERSION,
    ChunkRows,
    Dataset,
    MemoKeys,
    Sealer,
    build_chunk,
    write_chunk,
)
from bench.people import (
    BLOCK,
    CONDITIONS,
    GENDERS,
    INSURANCE,
    people_block,
)
from bench.people import contact_items as contact_items
from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.contacts import custom_fields, events, lists
from carepost.contacts.values import FieldSpec
from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

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
Progress = Callable[[str], None]


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
        for index in deferred_indexes():
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
    skip_key_checks = is_postgres_superuser(runtime)
    with bulk_mode(runtime):
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
    analyze(runtime)
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
