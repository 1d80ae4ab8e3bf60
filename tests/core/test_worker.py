"""The background worker: its job registry, its loop, and the foundation jobs."""

from __future__ import annotations

import secrets
import signal
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from carepost.accounts import service as accounts
from carepost.accounts.models import UserSession
from carepost.accounts.tasks import purge_ended_sessions_job
from carepost.audit.models import AuditHead
from carepost.audit.service import chain_for
from carepost.audit.tasks import log_chain_heads
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.core.worker import JobRegistry, PeriodicJob, Worker
from carepost.jobs import all_jobs
from tests.canaries import phi_value
from tests.environment import carepost_command, child_environment

# --- the registry ------------------------------------------------------------------------


def test_registry_refuses_a_second_job_with_the_same_name():
    registry = JobRegistry()

    @registry.register("demo.job", every_seconds=5)
    def job(runtime):
        return 0

    with pytest.raises(ValueError, match="already registered"):
        registry.add(PeriodicJob("demo.job", 10, job))
    with pytest.raises(ValueError, match="positive interval"):
        registry.add(PeriodicJob("demo.other", 0, job))
    assert "demo.job" in registry and len(registry) == 1


def test_selecting_an_unknown_job_names_the_known_ones():
    with pytest.raises(ValidationFailed) as caught:
        all_jobs().only(["accounts.purge_sessions", "nope"])
    assert "'nope'" in caught.value.detail
    assert "audit.anchor_heads" in caught.value.detail


def test_the_foundation_jobs_are_registered():
    assert {job.name for job in all_jobs()} >= {"accounts.purge_sessions", "audit.anchor_heads"}


# --- the loop ----------------------------------------------------------------------------


def _counting_registry(calls: list[str]) -> JobRegistry:
    registry = JobRegistry()

    @registry.register("test.fast", every_seconds=10)
    def fast(runtime):
        calls.append("fast")
        return 3

    @registry.register("test.slow", every_seconds=60)
    def slow(runtime):
        calls.append("slow")
        return 1

    return registry


def test_once_runs_every_job_and_logs_one_line_each_with_counts_only(runtime):
    calls: list[str] = []
    registry = _counting_registry(calls)
    leaked = phi_value("name")

    @registry.register("test.broken", every_seconds=60)
    def broken(runtime):
        raise ValueError(f"could not process {leaked}")

    with capture_logs() as logs:
        report = Worker(runtime, registry).run(once=True)

    assert calls == ["fast", "slow"]
    assert [o.job for o in report.outcomes] == ["test.fast", "test.slow", "test.broken"]
    assert report.failed == ["test.broken"]
    runs = [line for line in logs if line["event"] == "worker.job"]
    assert [(line["job"], line["count"]) for line in runs] == [("test.fast", 3), ("test.slow", 1)]
    failure = next(line for line in logs if line["event"] == "worker.job_failed")
    assert failure["job"] == "test.broken" and failure["error"] == "ValueError"
    assert leaked not in repr(logs)


def test_a_job_runs_again_once_its_interval_has_passed(runtime):
    calls: list[str] = []
    now = [1000.0]
    worker = Worker(runtime, _counting_registry(calls), clock=lambda: now[0])

    worker.run_due()
    assert calls == ["fast", "slow"]
    now[0] += 5
    worker.run_due()
    assert calls == ["fast", "slow"]
    assert worker.seconds_until_next_job() == pytest.approx(min(5, worker.max_sleep_seconds))
    now[0] += 6
    worker.run_due()
    assert calls == ["fast", "slow", "fast"]
    now[0] += 50
    worker.run_due()
    assert calls == ["fast", "slow", "fast", "fast", "slow"]


def test_stop_ends_the_loop_between_jobs(runtime):
    calls: list[str] = []
    worker = Worker(runtime, _counting_registry(calls), max_sleep_seconds=30)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert calls == ["fast", "slow"]


def test_the_worker_process_stops_gracefully_on_sigterm(settings, runtime, tmp_path):
    log_file = tmp_path / "worker.log"
    process = subprocess.Popen(
        carepost_command("worker"),
        env=child_environment(settings, CAREPOST_LOG_FILE=str(log_file)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "audit.anchor_heads" not in (log_file.read_text() if log_file.exists() else ""):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the worker never ran its jobs"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_file.read_text()
    assert '"worker.stopping"' in log and '"signal": "SIGTERM"' in log
    assert '"worker.stopped"' in log


# --- the foundation jobs -----------------------------------------------------------------


def test_purge_deletes_only_sessions_that_ended_long_ago(runtime, tenant):
    tenant_row, _keys = tenant
    now = utcnow()
    long_ago, lately = now - timedelta(days=10), now - timedelta(days=1)
    with runtime.tenant_session(tenant_row.id) as session:
        user, _password = accounts.create_user(
            session, tenant_id=tenant_row.id, email="purge@clinic.example", role="analyst"
        )

        def add(expires_at, revoked_at=None):
            row = UserSession(
                tenant_id=tenant_row.id,
                user_id=user.id,
                token_hash=secrets.token_hex(32),
                csrf_token=secrets.token_urlsafe(24),
                stage="mfa_ok",
                last_seen_at=min(expires_at, now),
                expires_at=expires_at,
                revoked_at=revoked_at,
            )
            session.add(row)
            session.flush()
            return row.id

        live = add(now + timedelta(hours=8))
        revoked_lately = add(now + timedelta(hours=8), revoked_at=lately)
        expired_lately = add(lately)
        revoked_long_ago = add(now + timedelta(hours=8), revoked_at=long_ago)
        expired_long_ago = add(long_ago)

    purged = purge_ended_sessions_job(runtime)

    assert purged >= 2
    with runtime.database.session() as session:
        left = set(session.scalars(select(UserSession.id).where(UserSession.user_id == user.id)))
    assert left == {live, revoked_lately, expired_lately}
    assert not left & {revoked_long_ago, expired_long_ago}


def test_anchoring_logs_every_chain_head(runtime, tenant):
    tenant_row, _keys = tenant
    with capture_logs() as logs:
        count = log_chain_heads(runtime)
    anchors = {line["chain"]: line for line in logs if line["event"] == "audit.anchor"}
    assert count == len(anchors) >= 2  # the tenant's chain and the system chain at least
    with runtime.database.session() as session:
        head = session.get(AuditHead, chain_for(tenant_row.id))
    assert anchors[str(tenant_row.id)]["head_hash"] == head.last_hash
    assert anchors[str(tenant_row.id)]["seq"] == head.seq
