"""Benchmark: upsert contacts through the service in import-sized batches.

Runs on the engine configured for carepost (``CAREPOST_DATABASE_URL``; SQLite in
a temporary directory when unset). Three cases over the same contacts
(``BENCH_CONTACTS``, 100,000 by default, in batches of ``BENCH_BATCH``, 5,000 as
the CSV import sends them):

* ``new``: every contact is created (the first import);
* ``unchanged``: the same rows again (a re-import: every item comes back unchanged);
* ``update``: the same contacts with new clinical values and journey stage.

``BENCH_WORKERS=n`` (0 by default) checks the batches in ``n`` worker processes
(:func:`carepost.contacts.prepare.prepare_batch`) while the main process writes
the previous one (:func:`carepost.contacts.upserts.upsert_prepared`): the shape
an import runner can take on a machine with cores to spare.

Each contact has what an EHR export carries: email, phone, first and last name,
birth date, an MRN, language, journey stage, and six custom fields (a string,
two choices, a multi-choice, a number at 0.1 and a date), so the figure includes
validation, encryption, blind indexes and token maintenance. Prints
``contacts_batch_<case> rows/s=<n> ratio_to_20000_rows_per_s=<r>`` per case
(issue 4's import target is 20,000 rows/s on PostgreSQL).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, upserts
from carepost.contacts.prepare import PreparedBatch, prepare_batch
from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy import service as tenancy

TOTAL = int(os.environ.get("BENCH_CONTACTS", "100000"))
BATCH = int(os.environ.get("BENCH_BATCH", "5000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "0"))
TARGET = 20_000
CONDITIONS = ["e11", "i10", "j45", "e78", "f32"]
GENDERS = ["female", "male", "other", "unknown"]
INSURANCES = ["medicare", "medicaid", "commercial", "self_pay", "other"]
LANGUAGES = ["en", "es", "en-US", "es-MX", "fr"]
FIRST_NAMES = ["Maria", "James", "Ana", "John", "Linh", "Omar", "Grace", "Chen", "Fatima", "Luis"]
LAST_NAMES = ["Garcia", "Smith", "Nguyen", "Johnson", "Khan", "Lopez", "Brown", "Wang", "Okafor"]
FIELDS: list[dict[str, Any]] = [
    {"key": "zip", "label": "ZIP", "type": "string"},
    {"key": "gender", "label": "Gender", "type": "choice", "choices": GENDERS},
    {"key": "insurance", "label": "Insurance", "type": "choice", "choices": INSURANCES},
    {"key": "conditions", "label": "Conditions", "type": "multi_choice", "choices": CONDITIONS},
    {"key": "a1c", "label": "HbA1c", "type": "number", "granularity": "0.1"},
    {"key": "last_visit", "label": "Last visit", "type": "date", "granularity": "day"},
]


def _day(rng: random.Random, first_year: int, last_year: int) -> str:
    return f"{rng.randint(first_year, last_year)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def contact_item(n: int, rng: random.Random) -> dict[str, Any]:
    """One realistic import row (as the CSV import maps it) for contact number ``n``."""
    return {
        "email": f"patient{n}@example.org",
        "phone": f"+1415{rng.randint(2000000, 9999999)}",
        "first_name": rng.choice(FIRST_NAMES),
        "last_name": rng.choice(LAST_NAMES),
        "birth_date": _day(rng, 1930, 2005),
        "external_ids": {"mrn": f"MRN{n:08d}"},
        "language": rng.choice(LANGUAGES),
        "journey_stage": "new",
        "custom": {
            "zip": f"{rng.randint(10000, 99999)}",
            "gender": rng.choice(GENDERS),
            "insurance": rng.choice(INSURANCES),
            "conditions": rng.sample(CONDITIONS, rng.randint(1, 3)),
            "a1c": round(rng.uniform(4.5, 12.0), 1),
            "last_visit": _day(rng, 2020, 2024),
        },
    }


def _updated(item: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    custom = dict(item["custom"], a1c=round(rng.uniform(4.5, 12.0), 1))
    custom["last_visit"] = _day(rng, 2025, 2025)
    return {**item, "custom": custom, "journey_stage": "active"}


def _setup(url: str, workdir: Path) -> tuple[Runtime, TenantKeys, uuid.UUID, Callable[[], None]]:
    key_file = workdir / "master.key"
    init_key_file(key_file)
    overrides: dict[str, object] = {}
    admin = None
    if not url.startswith("sqlite"):
        # A schema of its own, dropped at the end: never touch the database's own tables.
        overrides["database_schema"] = f"carepost_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{overrides["database_schema"]}"'))
    settings = load_settings(
        database_url=url, master_key_file=key_file, data_dir=workdir, **overrides
    )
    runtime = build_runtime(settings)
    migrations.upgrade(runtime.database.engine)
    with runtime.database.session() as session:
        tenant, keys = tenancy.create_tenant(
            session, runtime.keyring, slug=f"bench-{uuid.uuid4().hex[:8]}", name="Bench"
        )
    with runtime.bound_session(keys) as session:
        for definition in FIELDS:
            custom_fields.create_field(session, tenant.id, actor=SYSTEM, **definition)

    def close() -> None:
        runtime.close()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{overrides["database_schema"]}" CASCADE'))
            admin.dispose()

    return runtime, keys, tenant.id, close


def _prepared_batches(
    runtime: Runtime, keys: TenantKeys, batches: list[list[dict[str, Any]]], pool: Executor
) -> Iterator[PreparedBatch]:
    """Batches checked in the pool, at most ``WORKERS + 1`` ahead of the writes."""
    with runtime.bound_session(keys) as session:
        context = upserts.load_context(session, keys.tenant_id)
    now = utcnow()
    ahead: deque[Future[PreparedBatch]] = deque()
    for items in batches:
        ahead.append(pool.submit(prepare_batch, items, context, now=now))
        if len(ahead) > WORKERS:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def _run_case(
    runtime: Runtime,
    keys: TenantKeys,
    name: str,
    batches: list[list[dict[str, Any]]],
    status: str,
    pool: Executor | None,
) -> float:
    started = time.perf_counter()
    work: Iterable[list[dict[str, Any]] | PreparedBatch] = (
        batches if pool is None else _prepared_batches(runtime, keys, batches, pool)
    )
    for number, items in enumerate(work):
        with runtime.bound_session(keys) as session:
            if isinstance(items, PreparedBatch):
                results = upserts.upsert_prepared(session, keys, items, match="email", actor=SYSTEM)
            else:
                results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        bad = [r for r in results if r.status != status]
        assert not bad, f"{name} batch {number}: {len(bad)} items {bad[0].status}, not {status}"
    rate = TOTAL / (time.perf_counter() - started)
    print(
        f"contacts_batch_{name} rows/s={rate:.0f} "
        f"ratio_to_{TARGET}_rows_per_s={rate / TARGET:.2f} contacts={TOTAL} batch={BATCH} "
        f"workers={WORKERS}",
        flush=True,
    )
    return rate


def run() -> float:
    """Run the three cases; returns the rate of the import case (``new``)."""
    workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    url = os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    runtime, keys, _, close = _setup(url, workdir)
    rng = random.Random(4)
    items = [contact_item(n, rng) for n in range(TOTAL)]
    batches = [items[start : start + BATCH] for start in range(0, TOTAL, BATCH)]
    updates = [[_updated(item, rng) for item in batch] for batch in batches]
    pool = ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) if WORKERS else None
    try:
        rate = _run_case(runtime, keys, "new", batches, "created", pool)
        _run_case(runtime, keys, "unchanged", batches, "unchanged", pool)
        _run_case(runtime, keys, "update", updates, "updated", pool)
    finally:
        if pool is not None:
            pool.shutdown()
        close()
    return rate


if __name__ == "__main__":
    run()
