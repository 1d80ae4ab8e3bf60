"""Benchmark: import a generated CSV file of N contacts through the real import runner.

``python -m bench csv_import --rows 100000`` generates a deterministic, realistic
file (email, phone, names, birth date, MRN, ZIP, gender, insurance, ICD-10
conditions, HbA1c, last visit, language, journey stage), imports it into a fresh
tenant with the job runner that ``carepost contacts import`` uses (batches of
5,000, position and counts committed with each), and prints::

    csv_import rows/s=<n> ratio_to_20000_rows_per_s=<r> peak_rss_mb=<m>
        ratio_to_500_mb=<r> upsert_share=<s>

against issue 4's targets (20,000 rows/s on PostgreSQL, peak RSS under 500 MB),
with the CPU per row of the importer (and its preparation workers) and of the
PostgreSQL backends, and the machine's 1-minute load average before and after.
``upsert_share`` is the part of the time spent in ``upsert_contacts`` (which
does validation, encryption, blind indexes and the writes); the rest is the
import's own overhead (reading, mapping, coercion, job bookkeeping). The import
runs in a child process, so the peak RSS (``getrusage``) is the import's alone.
Engine: ``CAREPOST_DATABASE_URL`` (SQLite in a temporary directory when unset).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

    from carepost.core.runtime import Runtime
    from carepost.crypto.keyring import TenantKeys

COLUMNS = (
    "email,phone,first_name,last_name,birth_date,mrn,zip,gender,insurance,conditions,"
    "a1c,last_visit,language,journey_stage"
)
CONDITIONS = ["e11", "i10", "j45", "e78", "f32"]
FIRST = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal"]
LAST = ["Garcia", "Smith", "Nguyen", "Johnson", "Okafor", "Kim", "Patel", "Rossi", "Cohen"]
LANGUAGES = ["en", "en", "en", "es", "es-MX", "vi", "zh"]
STAGES = ["new", "active", "active", "overdue", "at-risk"]
TARGET_ROWS_PER_S = 20_000
TARGET_RSS_MB = 500


def write_file(path: Path, rows: int, seed: int = 4) -> None:
    """A reproducible CSV file of ``rows`` contacts, written as a stream."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(COLUMNS + "\n")
        for n in range(rows):
            conditions = ";".join(rng.sample(CONDITIONS, rng.randint(0, 3)))
            out.write(
                f"patient{n}@example.org,+1617{2_000_000 + n % 7_000_000:07d},"
                f"{rng.choice(FIRST)},{rng.choice(LAST)},"
                f"{rng.randint(1935, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                f"MRN{n:08d},{rng.randint(1000, 99999):05d},"
                f"{rng.choice(['female', 'male', 'other'])},"
                f"{rng.choice(['medicare', 'medicaid', 'commercial'])},{conditions},"
                f"{rng.uniform(4.5, 12.0):.1f},"
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                f"{rng.choice(LANGUAGES)},{rng.choice(STAGES)}\n"
            )


def create_fields(session: Session, tenant_id: uuid.UUID) -> None:
    """The tenant's custom fields the file's extra columns map to."""
    from carepost.audit.service import SYSTEM
    from carepost.contacts import custom_fields

    for key, kind, extra in (
        ("zip", "string", {}),
        ("gender", "choice", {"choices": ["female", "male", "other"]}),
        ("insurance", "choice", {"choices": ["medicare", "medicaid", "commercial"]}),
        ("conditions", "multi_choice", {"choices": CONDITIONS}),
        ("a1c", "number", {"granularity": "0.1"}),
        ("last_visit", "date", {"granularity": "day"}),
    ):
        custom_fields.create_field(
            session, tenant_id, key=key, label=key, type=kind, actor=SYSTEM, **extra
        )


def source_cpu_seconds(runtime: Runtime, keys: TenantKeys, path: Path, rows: int) -> float:
    """CPU seconds to read the file as the import does (decoding, CSV, mapping,
    coercion), with no database work."""
    from carepost.contacts import custom_fields
    from carepost.imports.csv_source import CsvReader, csv_rows
    from carepost.imports.mapping import plan_rows

    with runtime.bound_session(keys) as session:
        schema = custom_fields.load_schema(session, keys.tenant_id)
    started = _cpu_seconds()
    with path.open("rb") as stream:
        reader = CsvReader(stream)
        mapper = plan_rows(reader.header, {}, schema, match="email")
        read = sum(1 for row in csv_rows(reader, mapper) if not row.errors)
    assert read == rows, read
    return _cpu_seconds() - started


def _cpu_seconds() -> float:
    """CPU time of this process and of the worker processes it waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _backend_cpu_seconds(pids: set[int]) -> float:
    """CPU time of the PostgreSQL backends serving this process (a server on this host),
    from /proc: the import's cost on the database side, whatever else the machine runs."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _child(rows: int) -> dict[str, Any]:
    """Set up a database and a tenant, import the file, return the figures."""
    from bench.scratch import scratch_tenant
    from carepost.audit.service import SYSTEM
    from carepost.imports import local, runner

    with scratch_tenant() as scratch:
        runtime, keys, workdir = scratch.runtime, scratch.keys, scratch.workdir
        tenant_id = keys.tenant_id
        backends: set[int] = set()
        if runtime.settings.database_url.startswith("postgresql"):
            from sqlalchemy import event

            @event.listens_for(runtime.database.engine, "connect")
            def _remember_backend(connection: Any, _record: Any) -> None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    backends.add(cursor.fetchone()[0])

            runtime.database.engine.dispose()  # connections made from now on are counted
        with runtime.bound_session(keys) as session:
            create_fields(session, tenant_id)
        path = workdir / "contacts.csv"
        write_file(path, rows)

        upsert_seconds = 0.0

        def timed(upsert: Any) -> Any:
            def timed_upsert(*args: Any, **kwargs: Any) -> Any:
                nonlocal upsert_seconds
                started = time.perf_counter()
                try:
                    return upsert(*args, **kwargs)
                finally:
                    upsert_seconds += time.perf_counter() - started

            return timed_upsert

        source_cpu = source_cpu_seconds(runtime, keys, path, rows)

        runner.upsert_contacts = timed(runner.upsert_contacts)  # type: ignore[assignment]
        runner.upsert_prepared = timed(runner.upsert_prepared)  # type: ignore[assignment]
        job_id = local.start_local_import(
            runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
        )
        cpu_before = _cpu_seconds()
        server_before = _backend_cpu_seconds(backends)
        started = time.perf_counter()
        result = local.run_local_import(runtime, keys, job_id, path)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        server_cpu = _backend_cpu_seconds(backends) - server_before
        assert result.outcome == "completed", result
        with runtime.bound_session(keys) as session:
            from carepost.imports import service

            job = service.get_job(session, keys.tenant_id, job_id)
            assert job.created == rows and job.errored == 0, (job.created, job.errored)
        return {
            "rows": rows,
            "seconds": elapsed,
            "upsert_seconds": upsert_seconds,
            "cpu_seconds": cpu,
            "server_cpu_seconds": server_cpu,
            "source_cpu_seconds": source_cpu,
            "file_mb": path.stat().st_size / 1024 / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m bench csv_import")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv or [])
    load_before = os.getloadavg()[0]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.csv_import", "--child", str(args.rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        print(completed.stderr[-4000:])
        raise SystemExit(completed.returncode)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    load_after = os.getloadavg()[0]
    rate = figures["rows"] / figures["seconds"]
    rss = figures["peak_rss_mb"]
    share = figures["upsert_seconds"] / figures["seconds"]
    print(
        f"csv_import rows={figures['rows']} file_mb={figures['file_mb']:.1f} "
        f"rows/s={rate:.0f} ratio_to_{TARGET_ROWS_PER_S}_rows_per_s={rate / TARGET_ROWS_PER_S:.2f} "
        f"peak_rss_mb={rss:.0f} ratio_to_{TARGET_RSS_MB}_mb={rss / TARGET_RSS_MB:.2f} "
        f"upsert_share={share:.2f} rows_per_cpu_s={figures['rows'] / figures['cpu_seconds']:.0f} "
        f"source_rows_per_cpu_s={figures['rows'] / figures['source_cpu_seconds']:.0f} "
        f"cpu_us_per_row={figures['cpu_seconds'] / figures['rows'] * 1e6:.0f} "
        f"server_cpu_us_per_row={figures['server_cpu_seconds'] / figures['rows'] * 1e6:.0f} "
        f"load_before={load_before:.2f} load_after={load_after:.2f}"
    )
    return rate


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_child(int(sys.argv[2]))))
    else:
        run(sys.argv[1:])
