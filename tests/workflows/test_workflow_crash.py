"""Crash safety: a worker that dies after claiming, or mid-batch, loses nothing and
never causes a second email; leases keep two workers off the same runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from carepost.messages.sending import SendLimits
from carepost.workflows import engine
from carepost.workflows.models import RunStatus, WorkflowRun, WorkflowRunStep
from tests.workflows.conftest import T0


class WorkerKilled(Exception):
    """Stands for the process dying: its transaction never commits."""


def _mailing(journey):
    return journey.workflow(
        [
            {
                "id": "hello",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "end",
            },
            {"id": "end", "type": "exit"},
        ]
    )


def _limits(journey) -> SendLimits:
    settings = journey.runtime.settings
    return SendLimits(settings.outbox_max_attachment_bytes, settings.base_url)


def test_runs_claimed_by_a_worker_that_died_are_taken_again_after_the_lease(journey):
    workflow = _mailing(journey)
    people = [journey.contact() for _ in range(3)]
    journey.enroll(workflow, people)
    with journey.runtime.database.session() as session:
        claimed = engine.claim_due_runs(session, T0, owner="dead", tenant_id=journey.tenant_id)
    assert len(claimed) == 3
    # Another worker finds nothing to do while the lease lasts...
    assert journey.advance(T0 + timedelta(minutes=1)) == 0
    assert journey.emails() == 0
    # ...and everything once it has passed: one email each.
    assert journey.advance(T0 + engine.LEASE + timedelta(seconds=1)) > 0
    assert journey.emails() == 3
    assert all(journey.run(workflow, p).status == RunStatus.COMPLETED for p in people)


def test_a_worker_killed_mid_batch_leaves_no_email_and_the_batch_runs_once_later(journey):
    workflow = _mailing(journey)
    people = [journey.contact() for _ in range(4)]
    journey.enroll(workflow, people)
    with journey.runtime.database.session() as session:
        claimed = engine.claim_due_runs(session, T0, owner="doomed", tenant_id=journey.tenant_id)
    with pytest.raises(WorkerKilled), journey.session() as session:
        engine.advance_claimed(
            session,
            journey.keys,
            [r for r, _ in claimed],
            T0,
            owner="doomed",
            limits=_limits(journey),
        )
        raise WorkerKilled
    assert journey.emails() == 0
    journey.advance(T0 + engine.LEASE + timedelta(seconds=1))
    assert journey.emails() == 4
    journey.advance(T0 + engine.LEASE * 3)
    assert journey.emails() == 4


def test_a_replayed_send_step_finds_its_email_by_the_idempotency_key(journey):
    workflow = _mailing(journey)
    person = journey.contact()
    journey.enroll(workflow, [person])
    journey.advance(T0)
    assert journey.emails(person) == 1
    # Put the run back exactly where it was before the send (as if the step's effects
    # had committed but not the run's move): the same run, step and visit.
    with journey.session() as session:
        run = session.query(WorkflowRun).filter_by(workflow_id=workflow, contact_id=person).one()
        session.execute(delete(WorkflowRunStep).where(WorkflowRunStep.run_id == run.id))
        session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id == run.id)
            .values(
                status=RunStatus.ACTIVE,
                current_step="hello",
                visited=[],
                sent={},
                wake_at=T0,
                ended_at=None,
            )
        )
    journey.advance(T0 + timedelta(minutes=1))
    assert journey.emails(person) == 1
    assert journey.run(workflow, person).status == RunStatus.COMPLETED


def test_a_second_claim_takes_none_of_the_runs_another_worker_holds(journey, settings):
    workflow = _mailing(journey)
    journey.enroll(workflow, [journey.contact() for _ in range(5)])
    database = journey.runtime.database
    if settings.is_sqlite:
        with database.session() as session:
            first = engine.claim_due_runs(session, T0, owner="a", tenant_id=journey.tenant_id)
        with database.session() as session:
            second = engine.claim_due_runs(session, T0, owner="b", tenant_id=journey.tenant_id)
    else:
        # Both transactions open at once: SKIP LOCKED hands each its own rows.
        with database.session() as one, database.session() as two:
            first = engine.claim_due_runs(one, T0, owner="a", limit=3, tenant_id=journey.tenant_id)
            second = engine.claim_due_runs(two, T0, owner="b", tenant_id=journey.tenant_id)
    assert not {r for r, _ in first} & {r for r, _ in second}
    assert len(first) + len(second) == 5 or (settings.is_sqlite and len(second) == 0)


def test_sigkill_of_a_worker_mid_batch_sends_each_email_exactly_once(journey, settings):
    """A real worker process killed with SIGKILL after executing its batch, before
    committing: nothing of it stays, and the next worker sends each email once."""
    workflow = _mailing(journey)
    people = [journey.contact() for _ in range(5)]
    journey.enroll(workflow, people)
    overrides = {
        "environment": "test",
        "database_url": settings.database_url,
        "database_schema": settings.database_schema,
        "master_key_file": str(settings.master_key_file),
        "data_dir": str(settings.data_dir),
        "base_url": settings.base_url,
    }
    args = {"settings": overrides, "now": T0.isoformat(), "tenant_id": str(journey.tenant_id)}
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("doomed_worker.py")), json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.startswith("advanced "), line
        assert int(line.split()[1]) >= 5  # it did the work, emails included
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert journey.emails() == 0
    journey.advance(T0 + engine.LEASE + timedelta(seconds=1))
    assert journey.emails() == 5
    assert all(journey.emails(p) == 1 for p in people)
