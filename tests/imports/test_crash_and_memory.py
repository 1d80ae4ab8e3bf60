"""An import survives ``kill -9`` of its worker, and reading a big file keeps memory flat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text, update

from carepost.audit.service import SYSTEM
from carepost.core import migrations
from carepost.core.config import Settings, load_settings
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.imports import service
from carepost.imports.models import ImportJob
from carepost.imports.storage import ChunkWriter
from carepost.imports.tasks import run_imports
from tests.environment import carepost_command, child_environment
from tests.imports.clinic import contact_count

ROWS = 30_000  # six batches: the worker is killed long before it could finish


# These tests run `carepost` child processes on the database and kill one with
# SIGKILL: they get a database of their own, so that no other test (nor the CLI
# tests opening fresh connections to the suite's SQLite file) shares a file a
# killed process had open.
@pytest.fixture(scope="module")
def crash_settings(tmp_path_factory, log_file) -> Iterator[Settings]:
    run_dir = tmp_path_factory.mktemp("crash")
    key_file = run_dir / "master.key"
    init_key_file(key_file)
    overrides: dict[str, object] = {"database_url": f"sqlite:///{run_dir / 'carepost.db'}"}
    admin = None
    url = os.environ.get("CAREPOST_TEST_DATABASE_URL")
    if url:
        schema = f"carepost_crash_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides = {"database_url": url, "database_schema": schema}
    yield load_settings(
        environment="test",
        master_key_file=key_file,
        data_dir=run_dir,
        log_file=log_file,
        cookie_secure=True,
        base_url="https://testserver",
        **overrides,
    )
    if admin is not None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{overrides["database_schema"]}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def runtime(crash_settings: Settings) -> Iterator[Runtime]:
    built = build_runtime(crash_settings)
    migrations.upgrade(built.database.engine)
    yield built
    built.close()


def _queue_upload(runtime, keys, lines) -> ImportJob:
    with runtime.bound_session(keys) as session:
        job = service.create_job(
            session, keys.tenant_id, format="csv", mapping={}, match="mrn", actor=SYSTEM
        )
    writer = ChunkWriter(runtime, keys, job.id)
    for line in lines:
        writer.write(line)
    writer.close()
    with runtime.bound_session(keys) as session:
        job = service.get_job(session, keys.tenant_id, job.id)
        service.queue_upload(session, job, file_size=writer.size, actor=SYSTEM)
    return job


def _job(runtime, keys, job_id) -> ImportJob:
    with runtime.bound_session(keys) as session:
        return service.get_job(session, keys.tenant_id, job_id)


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found |= {child, *_descendants(child)}
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_killed_mid_job_is_taken_over_without_duplicates(
    crash_settings, runtime, clinic, tmp_path
):
    _tenant_row, keys = clinic
    lines = [b"mrn,email,first_name,a1c\n"]
    lines += [f"M{n},p{n}@clinic.example,First{n},6.{n % 10}\n".encode() for n in range(ROWS)]
    job = _queue_upload(runtime, keys, lines)
    log = tmp_path / "worker.out"
    with log.open("w") as output:
        worker = subprocess.Popen(
            carepost_command("worker", "--job", "imports.run"),
            env=child_environment(crash_settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while _job(runtime, keys, job.id).rows_read < 5000:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never committed a batch"
            time.sleep(0.05)
        # It checks the next batch in worker processes (carepost.imports.preparation).
        helpers = _descendants(worker.pid)
        assert helpers
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    # They end with it rather than wait for batches forever.
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in helpers):
        assert time.monotonic() < deadline, "a preparation worker outlived its import"
        time.sleep(0.1)

    crashed = _job(runtime, keys, job.id)
    assert crashed.status == "running" and 0 < crashed.rows_read < ROWS
    # What was committed is consistent: every counted row is a contact, no more.
    assert contact_count(runtime, clinic) == crashed.created == crashed.rows_read
    # Another worker may take the job once the dead one's lease has expired.
    assert crashed.lease_owner and crashed.lease_expires_at > utcnow()
    with runtime.database.session() as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    while _job(runtime, keys, job.id).status == "running":
        run_imports(runtime, budget_seconds=60)
    done = _job(runtime, keys, job.id)
    assert done.status == "completed"
    assert (done.rows_read, done.created, done.updated, done.errored) == (ROWS, ROWS, 0, 0)
    assert contact_count(runtime, clinic) == ROWS


MEMORY_SCRIPT = r"""
import json, resource, sys, uuid
from carepost.core.config import get_settings
from carepost.core.runtime import build_runtime
from carepost.imports import service, storage
from carepost.imports.csv_source import CsvReader, csv_rows
from carepost.imports.runner import load_plan

rows, job_id, tenant_id = int(sys.argv[1]), uuid.UUID(sys.argv[2]), uuid.UUID(sys.argv[3])
runtime = build_runtime(get_settings())
with runtime.database.session() as session:
    keys = runtime.keyring.load(session, tenant_id)

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

writer = storage.ChunkWriter(runtime, keys, job_id)
writer.write(b"mrn,email,first_name,last_name,zip,gender,conditions,a1c,last_visit\n")
for n in range(rows):
    writer.write(
        f"M{n},p{n}@clinic.example,First{n},Last{n},{n % 99999:05d},female,e11;i10,"
        f"{4 + n % 80 / 10},2024-0{1 + n % 9}-1{n % 9}\n".encode()
    )
writer.close()
after_upload = peak_mb()
with runtime.bound_session(keys) as session:
    job = service.get_job(session, tenant_id, job_id)
    plan = load_plan(session, job)
from carepost.imports.mapping import plan_rows
reader = CsvReader(storage.open_upload(runtime, keys, job_id))
mapper = plan_rows(reader.header, {}, plan.schema, match="mrn")
count, good, early = 0, 0, 0.0
for row in csv_rows(reader, mapper):
    count += 1
    good += not row.errors
    if count == 10_000:
        early = peak_mb()
print(json.dumps({"rows": count, "good": good, "size": writer.size, "early": early,
                  "after_upload": after_upload, "end": peak_mb()}))
"""


def test_a_200k_row_upload_is_stored_and_read_back_with_flat_memory(
    crash_settings, runtime, clinic
):
    _tenant_row, keys = clinic
    with runtime.bound_session(keys) as session:
        job = service.create_job(
            session, keys.tenant_id, format="csv", mapping={}, match="mrn", actor=SYSTEM
        )
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, "200000", str(job.id), str(keys.tenant_id)],
        env=child_environment(crash_settings),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert figures["rows"] == figures["good"] == 200_000
    assert figures["size"] > 15 * 1024 * 1024
    # Reading 190,000 more rows (and uploading 15+ MB) grows memory by a few MB at most.
    assert figures["end"] - figures["early"] < 8, figures
