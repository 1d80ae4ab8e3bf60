"""Benchmark: the workflow engine (issue 7) on the benchmark data set, in simulated time.

``python -m bench workflows [--scale 1000000] [--workers 2] [--samples 200]
[--database URL]`` uses the data set of :mod:`bench.datagen` at ``--scale`` contacts
(built unless the database holds it). In the data set's tenant it creates a segment
of every contact whose email is not suppressed and a workflow

    Wait 1 hour -> Send Email -> Wait for Event (open, 3 days) -> Branch (gender)
    -> Update Field (``last_visit`` := today) when the step type is registered,
    else Add to List

then measures:

1. **enrollment**: the segment's contacts enrolled in one call (issue 7: 1M in
   <= 60 s);
2. **transitions/s**: ``--workers`` processes advance every run through the
   simulated instants T0, T0 + 1 h and T0 + 1 h + 3 days (the engine's own
   :func:`~carepost.workflows.engine.advance_due_runs`, as ``carepost worker``
   calls it), 7 steps per contact (goal >= 5,000/s on PostgreSQL with 2 workers);
   the workers' peak resident size, and its growth between the first and last
   instant (flat memory: near 0 whatever the scale);
3. **event wake-up latency**: while every run waits for its open, ``--samples``
   opens are recorded one by one (the tracking hook's path: the event and the wake
   in one transaction) and a real ``carepost worker --job workflows.advance``
   process moves the runs on; the time from each open to its run leaving the wait,
   p50 and p99 (goal p99 <= 2 s).

The workflow, its runs and its messages are deleted afterwards. Prints one line
per figure with its ratio to the issue's target, and the machine's load.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text

from bench import datagen
from bench.campaign_send import DOMAIN, dataset, resident_bytes, verified_sender
from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import current_tenant_keys
from carepost.messages.models import Message, MessageEvent
from carepost.segments import service as segments
from carepost.templates import service as templates
from carepost.workflows import engine, service, triggers
from carepost.workflows.handlers import HANDLERS
from carepost.workflows.models import RunStatus, Workflow, WorkflowRun

ENROLL_TARGET_SECONDS = 60.0
ENROLL_TARGET_CONTACTS = 1_000_000
TRANSITIONS_TARGET = 5_000
LATENCY_TARGET_SECONDS = 2.0
T0 = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
INSTANTS = (T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1, days=3))
STEPS_PER_CONTACT = 7

_worker_runtime: Runtime | None = None


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _steps(template_id: uuid.UUID, last: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": "pause", "type": "wait_duration", "duration": {"hours": 1}, "next": "mail"},
        {
            "id": "mail",
            "type": "send_email",
            "template_id": str(template_id),
            "purpose": "transactional",
            "next": "open",
        },
        {
            "id": "open",
            "type": "wait_for_event",
            "event": {"kind": "opened"},
            "timeout": {"days": 3},
            "next": "choose",
            "timeout_next": "choose",
        },
        {
            "id": "choose",
            "type": "branch",
            "conditions": [
                {"rule": {"field": "gender", "op": "equals", "value": "female"}, "next": "last"}
            ],
            "fallback": "last",
        },
        {"id": "last", **last},
    ]


def _prepare(runtime: Runtime, tenant_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, str]:
    """The sending domain, a segment, a template and the active workflow; returns
    (workflow id, segment id, the last step's type)."""
    tag = uuid.uuid4().hex[:8]
    with runtime.tenant_session(tenant_id) as session:
        verified_sender(session, tenant_id)
        segment = segments.create_segment(
            session,
            tenant_id,
            name=f"bench workflow {tag}",
            description="every contact whose email is not suppressed",
            rule={"not": {"suppressed": "email"}},
            actor=SYSTEM,
        )
        template = templates.create_template(
            session,
            tenant_id,
            name=f"bench reminder {tag}",
            kind="transactional",
            subject="Your visit",
            html="<p>See you soon.</p>",
            text=None,
            actor=SYSTEM,
        )
        if "update_field" in HANDLERS:
            last: dict[str, Any] = {"type": "update_field", "field": "last_visit"}
            last.update({"action": "today"})
        else:
            engaged = lists.create_list(
                session, tenant_id, name=f"bench engaged {tag}", description="", actor=SYSTEM
            )
            last = {"type": "list_add", "list_id": str(engaged.id)}
        workflow = service.create_workflow(
            session,
            tenant_id,
            name=f"bench journey {tag}",
            sender_address=f"care@{DOMAIN}",
            draft={"steps": _steps(template.id, last)},
            actor=SYSTEM,
        )
        service.change_status(session, tenant_id, workflow.id, "activate", actor=SYSTEM, now=T0)
        return workflow.id, segment.id, str(last["type"])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _advance_until_idle(url: str, moment: datetime) -> tuple[int, int, int, float]:
    """In a worker process: advance due runs at ``moment`` until none is left;
    (transitions, resident bytes now, peak resident bytes of the process, CPU
    seconds spent). ``BENCH_PROFILE=<dir>``: a cProfile of each call there."""
    global _worker_runtime
    if _worker_runtime is None:
        _worker_runtime = datagen.open_runtime(url)
    profile_dir = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_dir else None
    cpu = _cpu_seconds()
    if profiler is not None:
        profiler.enable()
    done = 0
    while True:
        executed = engine.advance_due_runs(_worker_runtime, now=moment, max_batches=1000)
        done += executed
        if not executed:
            break
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{profile_dir}/worker-{os.getpid()}-{moment:%d%H}.prof")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return done, resident_bytes(), peak, _cpu_seconds() - cpu


def _backends_cpu(runtime: Runtime) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to this database
    (from /proc: readable when PostgreSQL runs on this machine; 0 elsewhere)."""
    if runtime.database.engine.dialect.name != "postgresql":
        return 0.0
    with runtime.database.engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _warm(url: str) -> int:
    global _worker_runtime
    if _worker_runtime is None:
        _worker_runtime = datagen.open_runtime(url)
    return os.getpid()


class _Latency:
    """Opens recorded one by one while a real worker process advances the runs."""

    def __init__(self, runtime: Runtime, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> None:
        self.runtime, self.tenant_id, self.workflow_id = runtime, tenant_id, workflow_id

    def measure(self, url: str, samples: int) -> list[float]:
        with self.runtime.tenant_session(self.tenant_id) as session:
            picked = session.execute(
                select(WorkflowRun.id, WorkflowRun.sent)
                .where(
                    WorkflowRun.workflow_id == self.workflow_id,
                    WorkflowRun.status == RunStatus.WAITING,
                    WorkflowRun.current_step == "open",
                )
                .limit(samples * 2)
            ).all()
        env = {**os.environ, "CAREPOST_DATABASE_URL": url}
        # The data set's key (bench/datagen.py), not ./var/master.key.
        env["CAREPOST_MASTER_KEY_FILE"] = str(self.runtime.settings.master_key_file.resolve())
        with tempfile.TemporaryFile() as errors:
            worker = subprocess.Popen(
                [sys.executable, "-m", "carepost", "worker", "--job", "workflows.advance"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            try:
                time.sleep(8)  # the worker's start-up (imports, first rounds)
                if worker.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(
                        f"the worker exited ({worker.returncode}): "
                        f"{errors.read()[-2000:].decode(errors='replace')}"
                    )
                return [
                    self._one(run_id, uuid.UUID(sent["mail"]))
                    for run_id, sent in picked
                    if "mail" in sent  # a contact without an email address has no message
                ]
            finally:
                worker.terminate()
                worker.wait(timeout=30)

    def _one(self, run_id: uuid.UUID, message_id: uuid.UUID) -> float:
        started = time.perf_counter()
        with self.runtime.tenant_session(self.tenant_id) as session:
            now = utcnow()
            session.add(
                MessageEvent(
                    tenant_id=self.tenant_id, message_id=message_id, kind="opened", occurred_at=now
                )
            )
            session.flush()
            engine.wake_on_message_event(session, message_id, "opened", now)
        while True:
            with self.runtime.tenant_session(self.tenant_id) as session:
                step = session.scalar(
                    select(WorkflowRun.current_step).where(WorkflowRun.id == run_id)
                )
            if step != "open":
                return time.perf_counter() - started
            if time.perf_counter() - started > 30:
                return float("inf")
            time.sleep(0.01)


def _clean_up(runtime: Runtime, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> None:
    with runtime.tenant_session(tenant_id) as session:
        session.execute(delete(Message).where(Message.created_by_id == str(workflow_id)))
        session.execute(delete(Workflow).where(Workflow.id == workflow_id))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(options: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench workflows", description=__doc__)
    parser.add_argument("--scale", type=int, default=1_000_000, help="contacts in the data set")
    parser.add_argument("--workers", type=int, default=2, help="processes advancing runs")
    parser.add_argument("--samples", type=int, default=200, help="opens timed one by one")
    parser.add_argument("--database", default=os.environ.get("CAREPOST_DATABASE_URL"))
    args = parser.parse_args(options)
    url = args.database
    if not url:
        workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
        url = f"sqlite:///{workdir / 'workflows.db'}"
        os.environ.setdefault("CAREPOST_MASTER_KEY_FILE", str(workdir / "master.key"))
    runtime = datagen.open_runtime(url)
    engine_name = runtime.database.engine.dialect.name
    workers = args.workers if engine_name == "postgresql" else 1  # SQLite: one claimer
    try:
        tenant_id = dataset(runtime, args.scale, 0)
        workflow_id, segment_id, last = _prepare(runtime, tenant_id)
        try:
            started, cpu, db_cpu = time.perf_counter(), _cpu_seconds(), _backends_cpu(runtime)
            with runtime.tenant_session(tenant_id) as session:
                keys = current_tenant_keys()
                enrolled = triggers.enroll_segment(
                    session, keys, workflow_id, segment_id, actor=SYSTEM, now=T0
                ).enrolled
            enroll_seconds = time.perf_counter() - started
            target = ENROLL_TARGET_SECONDS * enrolled / ENROLL_TARGET_CONTACTS
            print(
                f"workflows enroll_seconds={enroll_seconds:.1f} contacts={enrolled} "
                f"ratio_to_{target:.1f}_s={target / enroll_seconds:.2f} "
                f"(1M in 60 s) engine={engine_name} load={_load()}",
                flush=True,
            )
            print(
                f"workflows enroll_cpu_s bench={_cpu_seconds() - cpu:.1f} "
                f"postgresql={_backends_cpu(runtime) - db_cpu:.1f} load={_load()}",
                flush=True,
            )
            transitions, seconds, rss, peaks = 0, 0.0, [], []
            worker_cpu = backend_cpu = 0.0
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                list(pool.map(_warm, [url] * workers))
                for index, moment in enumerate(INSTANTS):
                    if index == 2:
                        latencies = _Latency(runtime, tenant_id, workflow_id).measure(
                            url, args.samples
                        )
                    started, db_cpu = time.perf_counter(), _backends_cpu(runtime)
                    futures = [
                        pool.submit(_advance_until_idle, url, moment) for _ in range(workers)
                    ]
                    results = [future.result() for future in futures]
                    took = time.perf_counter() - started
                    db_cpu = _backends_cpu(runtime) - db_cpu
                    done = sum(result[0] for result in results)
                    cpu = sum(result[3] for result in results)
                    seconds, transitions = seconds + took, transitions + done
                    worker_cpu, backend_cpu = worker_cpu + cpu, backend_cpu + db_cpu
                    print(
                        f"workflows instant={moment:%Y-%m-%dT%H:%M} transitions={done} "
                        f"seconds={took:.1f} per_s={done / took:.0f} "
                        f"cpu_s_per_1000: workers={1000 * cpu / max(done, 1):.3f} "
                        f"postgresql={1000 * db_cpu / max(done, 1):.3f} load={_load()}",
                        flush=True,
                    )
                    rss.append(sum(result[1] for result in results))
                    peaks += [result[2] for result in results]
            rate = transitions / seconds
            print(
                f"workflows transitions/s={rate:.0f} ratio_to_{TRANSITIONS_TARGET}_per_s="
                f"{rate / TRANSITIONS_TARGET:.2f} transitions={transitions} "
                f"expected={STEPS_PER_CONTACT * enrolled} workers={workers} last_step={last} "
                f"engine={engine_name} load={_load()}",
                flush=True,
            )
            print(
                f"workflows cpu_s_per_1000_transitions workers="
                f"{1000 * worker_cpu / max(transitions, 1):.3f} "
                f"postgresql={1000 * backend_cpu / max(transitions, 1):.3f} load={_load()}",
                flush=True,
            )
            print(
                f"workflows worker_peak_rss_mb={max(peaks) / 2**20:.0f} "
                f"rss_growth_mb={(rss[-1] - rss[0]) / 2**20 / workers:.1f} per worker "
                f"(after the first instant -> after the last) load={_load()}",
                flush=True,
            )
            p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
            print(
                f"workflows wake_latency_p99_s={p99:.2f} "
                f"ratio_to_{LATENCY_TARGET_SECONDS:.0f}_s={LATENCY_TARGET_SECONDS / p99:.2f} "
                f"p50_s={p50:.2f} samples={len(latencies)} waiting_runs={enrolled} "
                f"load={_load()}",
                flush=True,
            )
        finally:
            if not os.environ.get("BENCH_KEEP"):
                _clean_up(runtime, tenant_id, workflow_id)
    finally:
        runtime.close()


if __name__ == "__main__":
    run(sys.argv[1:])
