"""Benchmark: upsert 100,000 contacts through the service in batches of 10,000.

Runs on the engine configured for carepost (``CAREPOST_DATABASE_URL``; SQLite in
a temporary directory when unset) and prints ``contacts_batch_upsert rows/s=<n>``.
Each contact has an email, an MRN, a birth date and three custom fields (a
multi-choice, a number and a date), so the figure includes encryption, blind
indexes and token maintenance.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, upserts
from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.runtime import build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.tenancy import service as tenancy

TOTAL = 100_000
BATCH = 10_000
CONDITIONS = ["e11", "i10", "j45", "e78", "f32", "m54", "k21", "n18"]


def _day(rng: random.Random, first_year: int, last_year: int) -> str:
    return f"{rng.randint(first_year, last_year)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _items(start: int, count: int, rng: random.Random) -> list[dict[str, object]]:
    return [
        {
            "email": f"patient{n}@example.org",
            "external_ids": {"mrn": f"MRN{n:08d}"},
            "first_name": f"First{n}",
            "birth_date": _day(rng, 1930, 2005),
            "custom": {
                "conditions": rng.sample(CONDITIONS, rng.randint(0, 3)),
                "a1c": round(rng.uniform(4.5, 12.0), 1),
                "last_visit": _day(rng, 2020, 2024),
            },
        }
        for n in range(start, start + count)
    ]


def run() -> float:
    workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    key_file = workdir / "master.key"
    init_key_file(key_file)
    url = os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    overrides: dict[str, object] = {}
    admin = None
    if not url.startswith("sqlite"):
        # A schema of its own, dropped at the end: never touch the database's own tables.
        schema = f"carepost_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides["database_schema"] = schema
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
        custom_fields.create_field(
            session,
            tenant.id,
            key="conditions",
            label="Conditions",
            type="multi_choice",
            choices=CONDITIONS,
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session,
            tenant.id,
            key="a1c",
            label="HbA1c",
            type="number",
            granularity="0.1",
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session, tenant.id, key="last_visit", label="Last visit", type="date", actor=SYSTEM
        )
    rng = random.Random(4)
    batches = [_items(start, BATCH, rng) for start in range(0, TOTAL, BATCH)]
    started = time.perf_counter()
    for items in batches:
        with runtime.bound_session(keys) as session:
            results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
            assert all(r.status == "created" for r in results)
    elapsed = time.perf_counter() - started
    runtime.close()
    if admin is not None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{overrides["database_schema"]}" CASCADE'))
        admin.dispose()
    rate = TOTAL / elapsed
    # Reference: issue 4's import target of 20,000 rows/s on PostgreSQL.
    print(f"contacts_batch_upsert rows/s={rate:.0f} ratio_to_20000_rows_per_s={rate / 20_000:.2f}")
    return rate


if __name__ == "__main__":
    run()
