"""Crash recovery with the real ``carepost worker`` process: SIGKILL it while it
advances a batch of runs, then let another worker finish; no step is skipped and no
email is queued twice (the batch that was running rolled back with its emails)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.contacts import upserts
from carepost.messages.models import Message
from carepost.workflows import engine
from carepost.workflows.models import RunStatus, WorkflowRun, WorkflowRunStep

ROOT = Path(__file__).parents[2]


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    env |= {
        "CAREPOST_ENVIRONMENT": "test",
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_MASTER_KEY_FILE": str(settings.master_key_file),
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_BASE_URL": settings.base_url,
    }
    if settings.database_schema:
        env["CAREPOST_DATABASE_SCHEMA"] = settings.database_schema
    return env


def _count(journey, query) -> int:
    with journey.runtime.database.session() as session:
        return int(session.scalar(query) or 0)


def test_sigkill_of_carepost_worker_mid_batch_skips_no_step_and_sends_nothing_twice(
    journey, settings
):
    workflow = journey.workflow(
        [
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "w",
            },
            {"id": "w", "type": "wait_duration", "duration": {"days": 1}},
        ]
    )
    with journey.session() as session:  # two batches of the worker (500 runs each)
        created = upserts.upsert_contacts(
            session,
            journey.keys,
            [{"email": f"k{i}-{uuid.uuid4().hex[:6]}@example.org"} for i in range(700)],
            match="email",
            actor=SYSTEM,
        )
    people = [r.id for r in created]
    start = datetime.now(UTC)
    journey.enroll(workflow, people, now=start)
    emails = select(func.count()).select_from(Message).where(Message.tenant_id == journey.tenant_id)
    carepost = shutil.which("carepost", path=str(Path(os.sys.executable).parent)) or "carepost"
    worker = subprocess.Popen(
        [carepost, "worker", "--job", "workflows.advance"],
        env=_env(settings),
        cwd=settings.data_dir,  # no carepost.toml there: the environment alone
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _count(journey, emails) == 0:  # its first batch committed
            if worker.poll() is not None:
                raise AssertionError(worker.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker advanced nothing"
            time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    at_kill = _count(journey, emails)
    assert 0 < at_kill <= len(people)
    print(f"emails committed when killed: {at_kill} of {len(people)}")

    # Another worker, once the dead one's leases have passed, finishes the work.
    journey.advance(datetime.now(UTC) + engine.LEASE + timedelta(seconds=1))
    assert _count(journey, emails) == len(people)
    per_contact = (
        select(Message.contact_id, func.count())
        .where(Message.tenant_id == journey.tenant_id)
        .group_by(Message.contact_id)
    )
    with journey.runtime.database.session() as session:
        counts = dict(session.execute(per_contact).all())
        assert set(counts) == set(people) and set(counts.values()) == {1}
        statuses = set(
            session.scalars(select(WorkflowRun.status).where(WorkflowRun.workflow_id == workflow))
        )
        steps = session.execute(
            select(WorkflowRunStep.step_id, func.count())
            .where(WorkflowRunStep.workflow_id == workflow)
            .group_by(WorkflowRunStep.step_id)
        ).all()
    assert statuses == {RunStatus.WAITING}
    assert dict(steps) == {"mail": len(people), "w": len(people)}  # each step once per run
