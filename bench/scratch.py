"""A throw-away database and tenant for a benchmark run.

SQLite in a temporary directory, or, when ``CAREPOST_DATABASE_URL`` names
PostgreSQL, a schema of its own there (dropped at the end), migrated, with a fresh
master key and one tenant. The benchmarks that build their own data use it
(bench.datagen keeps its data set instead).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy import service as tenancy


@dataclass(frozen=True)
class Scratch:
    runtime: Runtime
    keys: TenantKeys
    workdir: Path


@contextmanager
def scratch_tenant() -> Iterator[Scratch]:
    workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    key_file = workdir / "master.key"
    init_key_file(key_file)
    url = os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    overrides: dict[str, object] = {}
    admin = None
    if not url.startswith("sqlite"):
        schema = f"carepost_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides["database_schema"] = schema
    settings = load_settings(
        database_url=url, master_key_file=key_file, data_dir=workdir, **overrides
    )
    runtime = build_runtime(settings)
    try:
        migrations.upgrade(runtime.database.engine)
        with runtime.database.session() as session:
            _tenant, keys = tenancy.create_tenant(
                session, runtime.keyring, slug=f"bench-{uuid.uuid4().hex[:8]}", name="Bench"
            )
        yield Scratch(runtime, keys, workdir)
    finally:
        runtime.close()
        shutil.rmtree(workdir, ignore_errors=True)  # a CSV of a million rows is 127 MB
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{overrides["database_schema"]}" CASCADE'))
            admin.dispose()
