"""Benchmark: end-to-end email delivery, batch API to SMTP sink (issue 5, Performance).

``python -m bench email_e2e --messages 100000 --workers 2 [--dkim | --no-dkim]
[--concurrency 80] [--linger SECONDS] [--setting NAME=VALUE]``, on
the engine in ``CAREPOST_DATABASE_URL`` (PostgreSQL is the target; SQLite in a
temporary directory when unset, where one worker is the supported shape):

1. sets up a tenant with a verified sending domain (with its active RSA-2048 and
   Ed25519 DKIM keys, or without keys under ``--no-dkim``), in a schema of its own
   on PostgreSQL, dropped at the end;
2. submits ``--messages`` personalized messages through the real batch API
   (``POST /api/v1/messages/batch``, 10,000 a request, in process as
   bench/email_batch.py does): half to contacts, half to plain addresses, all with
   per-message ``data`` and no PHI (every message passes the protection stage: DLP,
   policy decision, audit entry, and goes by opportunistic TLS);
3. starts ``--workers`` real ``carepost worker --job messages.deliver`` processes
   with a smarthost pointing at an aiosmtpd sink in another process
   (:class:`bench.smtp_baseline.Sink`), and times until the outbox shows every
   message delivered; the sink must have accepted exactly that many;
4. in the same run, times :func:`bench.smtp_baseline.bare_loop` sending as many
   pre-built messages to a fresh sink of the same kind (the client-side ceiling).

Prints ``email_e2e delivered messages/s=<n> ratio_to_1000=<r>``, ``email_e2e
bare_loop messages/s=<n>``, ``email_e2e ratio_to_bare_loop=<r>`` (goal >= 0.5), the
submit rate, the workers' CPU time per message, and the load (``uptime``) with each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from bench.csv_import import _backend_cpu_seconds
from bench.smtp_baseline import Sink, bare_loop, build_messages
from carepost.accounts import apikeys
from carepost.accounts.permissions import PERMISSIONS
from carepost.api.app import create_app
from carepost.audit.service import SYSTEM
from carepost.contacts import upserts
from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.domains import service as domains
from carepost.domains.models import SendingDomain
from carepost.messages.models import Message, MessageState
from carepost.tenancy import service as tenancy

TARGET = 1_000
BATCH = 10_000
CONTACTS = 5_000
FROM_DOMAIN = "clinic.example"
# Envelopes in flight per worker, and messages per claim: with the defaults (10 and
# 200) the lanes (each waiting for its SMTP answers and its outcome's commit) leave
# the CPU idle; with 80 and 500 a commit of outcomes holds more reports and a claim
# more messages, and 2 workers keep 2 cores about 85 % busy (docs/email-delivery.md,
# Throughput; 40 and 200 gave 1,680 messages/s where these give 2,000 without DKIM).
CONCURRENCY = 80
CLAIM_BATCH = 500
# The workers' PostgreSQL connections say so (libpq's PGAPPNAME): their backends' CPU.
WORKER_APP_NAME = "carepost-bench-worker"
# Done when nothing moves for this long while messages are still undelivered.
STALL_SECONDS = 120.0
# How often the outbox is read while the sink is still receiving (see deliver).
OUTBOX_CHECK_SECONDS = 5.0


def load() -> str:
    """The load averages of ``uptime`` (1, 5, 15 minutes)."""
    return "load=" + "/".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Bench:
    runtime: Runtime
    tenant_id: uuid.UUID
    api_secret: str
    env: dict[str, str]
    workdir: Path
    close: Callable[[], None]


def setup(url: str, workdir: Path, *, dkim: bool, contacts: int) -> Bench:
    """A migrated database (a schema of its own on PostgreSQL), one tenant with a
    verified sending domain, ``contacts`` contacts and an API key."""
    key_file = workdir / "master.key"
    init_key_file(key_file)
    env = {
        "CAREPOST_DATABASE_URL": url,
        "CAREPOST_MASTER_KEY_FILE": str(key_file),
        "CAREPOST_DATA_DIR": str(workdir),
    }
    admin = None
    schema = None
    if not url.startswith("sqlite"):
        # Never touch the database's own tables: the bench gets a schema, dropped after.
        schema = f"carepost_e2e_{uuid.uuid4().hex[:8]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        env["CAREPOST_DATABASE_SCHEMA"] = schema
    settings = load_settings(
        database_url=url, master_key_file=key_file, data_dir=workdir, database_schema=schema
    )
    runtime = build_runtime(settings)
    migrations.upgrade(runtime.database.engine)
    with runtime.database.session() as session:
        tenant, keys = tenancy.create_tenant(
            session, runtime.keyring, slug=f"e2e-{uuid.uuid4().hex[:8]}", name="E2E"
        )
    with runtime.bound_session(keys) as session:
        if dkim:  # an active RSA-2048 and an active Ed25519 key: both sign
            domain = domains.add_domain(session, tenant.id, name=FROM_DOMAIN, actor=SYSTEM)
            domain.state = "verified"  # no DNS to publish in: recorded as verified
        else:
            session.add(
                SendingDomain(
                    tenant_id=tenant.id,
                    name=FROM_DOMAIN,
                    state="verified",
                    created_by_type="system",
                    created_by_id="bench",
                )
            )
        people = [
            {"email": f"contact{n}@example.org", "first_name": f"First{n}"} for n in range(contacts)
        ]
        upserts.upsert_contacts(session, keys, people, match="email", actor=SYSTEM)
        _key, secret = apikeys.create_api_key(
            session,
            tenant_id=tenant.id,
            name="bench",
            scopes=sorted(PERMISSIONS),
            creator_permissions=frozenset(PERMISSIONS),
            actor=SYSTEM,
        )

    def close() -> None:
        runtime.close()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    return Bench(runtime, tenant.id, secret, env, workdir, close)


def contact_ids(bench: Bench) -> list[str]:
    from carepost.contacts.models import Contact

    with bench.runtime.database.session() as session:
        rows = session.scalars(
            select(Contact.id).where(Contact.tenant_id == bench.tenant_id).order_by(Contact.id)
        )
        return [str(row) for row in rows]


def items(start: int, count: int, contacts: list[str]) -> list[dict[str, Any]]:
    """Personalized messages: every other one to a contact, the rest with ``data``."""
    batch = []
    for n in range(start, start + count):
        item: dict[str, Any] = {
            "from": f"care@{FROM_DOMAIN}",
            "from_name": "Riverside Clinic",
            "subject": "Your appointment on {{ day }}",
            "html": "<p>Dear {{ name }}, we look forward to seeing you on {{ day }}.</p>",
            "data": {"day": f"2027-01-{1 + n % 28:02d}", "name": f"Patient {n}"},
            "tags": ["reminder"],
            "idempotency_key": f"e2e-{n}",
        }
        if n % 2 and contacts:
            item["contact_id"] = contacts[n % len(contacts)]
            # No contact field in the content: a template that reads one (the first name
            # is PHI) goes by E2E or the portal under the protection policy (docs/policy.md),
            # which is not what this measures.
            item["subject"] = "Hello, your appointment on {{ day }}"
        else:
            item["to"] = f"patient{n}@example.org"
        batch.append(item)
    return batch


def submit(bench: Bench, total: int) -> float:
    """Queue ``total`` messages through the batch API; returns the seconds it took."""
    contacts = contact_ids(bench)
    headers = {"Authorization": f"Bearer {bench.api_secret}"}
    bodies = [
        {"items": items(start, min(BATCH, total - start), contacts)}
        for start in range(0, total, BATCH)
    ]
    with TestClient(create_app(bench.runtime), base_url="https://bench") as client:
        started = time.perf_counter()
        for number, body in enumerate(bodies):
            response = client.post("/api/v1/messages/batch", json=body, headers=headers)
            if response.status_code != 200 or response.json()["queued"] != len(body["items"]):
                raise RuntimeError(f"batch {number}: {response.status_code} {response.text[:300]}")
        return time.perf_counter() - started


def states(bench: Bench) -> dict[str, int]:
    with bench.runtime.database.session() as session:
        rows = session.execute(
            select(Message.state, func.count())
            .where(Message.tenant_id == bench.tenant_id)
            .group_by(Message.state)
        ).all()
    return {state: count for state, count in rows}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_env(bench: Bench, port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    env |= bench.env | {
        "CAREPOST_SMTP_MODE": "smarthost",
        "CAREPOST_SMARTHOST_HOST": "127.0.0.1",
        "CAREPOST_SMARTHOST_PORT": str(port),
        "CAREPOST_SMARTHOST_TLS": "none",
        "CAREPOST_SMTP_HELO_NAME": "bench.test",
        "CAREPOST_BOUNCE_DOMAIN": f"bounces.{FROM_DOMAIN}",
        "CAREPOST_LOG_LEVEL": "warning",
        # libpq's own variable: the workers' PostgreSQL backends are known by it.
        "PGAPPNAME": WORKER_APP_NAME,
        "CAREPOST_WORKER_POLL_SECONDS": "0.2",
    }
    return env | extra


def _worker_backends_cpu(bench: Bench) -> float | None:
    """CPU seconds of the PostgreSQL backends the workers opened (``PGAPPNAME``); they
    were opened by the workers, so all their time is the run's. None on SQLite."""
    engine = bench.runtime.database.engine
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        pids = connection.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": WORKER_APP_NAME},
        ).all()
    return _backend_cpu_seconds({int(pid) for pid in pids})


def deliver(
    bench: Bench, sink: Sink, total: int, workers: int, extra: dict[str, str]
) -> tuple[float, float, float | None]:
    """Start the workers and wait for every message to be delivered.

    Returns the seconds from the workers' start to the last delivery, the CPU
    seconds the workers used and those of their PostgreSQL backends (None on
    SQLite)."""
    env = worker_env(bench, sink.port, extra)
    command = [sys.executable, "-m", "carepost", "worker", "--job", "messages.deliver"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=env, cwd=bench.workdir, stdout=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        # Progress is read from the sink's counter (shared memory), not the outbox: a
        # count of the tenant's messages by state reads every row, and four a second
        # took 15-17 % of a core from the run it measured. The outbox is read every
        # OUTBOX_CHECK_SECONDS (a message that failed or bounced ends the run), and
        # then on every tick once the sink has them all, until it shows them delivered.
        accepted, moved_at, checked_at = 0, time.perf_counter(), time.perf_counter()
        while True:
            time.sleep(0.25)
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited with {process.returncode}")
            now = time.perf_counter()
            if sink.accepted.value != accepted:
                accepted, moved_at = sink.accepted.value, now
            if accepted < total and now - checked_at < OUTBOX_CHECK_SECONDS:
                if now - moved_at > STALL_SECONDS:
                    raise RuntimeError(f"delivery stalled: {states(bench)}")
                continue
            counts, checked_at = states(bench), now
            if counts.get(MessageState.DELIVERED, 0) >= total:
                break
            stuck = {s: n for s, n in counts.items() if s in ("bounced", "failed", "suppressed")}
            if stuck:
                raise RuntimeError(f"messages did not go out: {stuck}")
            if now - moved_at > STALL_SECONDS:
                raise RuntimeError(f"delivery stalled: {counts}")
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_seconds(process.pid) for process in processes)
        backend_cpu = _worker_backends_cpu(bench)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    time.sleep(0.2)  # the sink counts in its own process: let the last answers land
    if sink.accepted.value != total:
        raise RuntimeError(f"the sink accepted {sink.accepted.value} messages, not {total}")
    return elapsed, cpu, backend_cpu


@dataclass(frozen=True)
class Figures:
    submit_seconds: float
    deliver_seconds: float
    bare_seconds: float
    worker_cpu_seconds: float
    # The workers' PostgreSQL backends (None on SQLite) and the receiving sink.
    database_cpu_seconds: float | None
    sink_cpu_seconds: float
    # The bare loop's client (this process) and its sink.
    bare_cpu_seconds: float
    load_submit: str
    load_deliver: str
    load_bare: str


def measure(
    total: int,
    *,
    workers: int,
    dkim: bool,
    connections: int = 8,
    url: str | None = None,
    workdir: Path | None = None,
    extra: dict[str, str] | None = None,
) -> Figures:
    """One run: submit, deliver, then the bare loop. ``extra``: more environment
    for the workers (``CAREPOST_OUTBOX_CONCURRENCY``, say)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="carepost-e2e-"))
    url = url or os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'e2e.db'}"
    bench = setup(url, workdir, dkim=dkim, contacts=min(CONTACTS, max(1, total // 20)))
    sink = Sink()
    try:
        submit_seconds = submit(bench, total)
        queued = states(bench)
        if queued.get(MessageState.QUEUED, 0) != total:
            raise RuntimeError(f"the outbox holds {queued}, not {total} queued")
        load_submit = load()
        sink_before = cpu_seconds(sink.process.pid)  # type: ignore[arg-type]
        deliver_seconds, worker_cpu, database_cpu = deliver(
            bench, sink, total, workers, extra or {}
        )
        sink_cpu = cpu_seconds(sink.process.pid) - sink_before  # type: ignore[arg-type]
        load_deliver = load()
    finally:
        sink.stop()
        bench.close()
    sink = Sink()
    try:
        messages = build_messages(total)
        sink_before, client_before = cpu_seconds(sink.process.pid), time.process_time()  # type: ignore[arg-type]
        bare_seconds = asyncio.run(bare_loop(sink.port, messages, connections))
        time.sleep(0.2)
        bare_cpu = time.process_time() - client_before
        bare_cpu += cpu_seconds(sink.process.pid) - sink_before  # type: ignore[arg-type]
        if sink.accepted.value != total:
            raise RuntimeError(f"the bare loop's sink accepted {sink.accepted.value} of {total}")
    finally:
        sink.stop()
    return Figures(
        submit_seconds,
        deliver_seconds,
        bare_seconds,
        worker_cpu,
        database_cpu,
        sink_cpu,
        bare_cpu,
        load_submit,
        load_deliver,
        load(),
    )


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m bench email_e2e")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dkim", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--connections", type=int, default=8, help="of the bare loop")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help="CAREPOST_OUTBOX_CONCURRENCY of the workers (envelopes in flight per worker)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=None,
        help="CAREPOST_OUTBOX_COMMIT_LINGER_SECONDS of the workers (default: the setting's)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other setting of the workers, e.g. outbox_commit_linger_seconds=0.02",
    )
    options, _unknown = parser.parse_known_args(argv or [])
    total, dkim = options.messages, "on" if options.dkim else "off"
    extra = {
        "CAREPOST_OUTBOX_CONCURRENCY": str(options.concurrency),
        "CAREPOST_OUTBOX_CLAIM_BATCH": str(CLAIM_BATCH),
    }
    for setting in options.setting:
        name, _, value = setting.partition("=")
        extra[f"CAREPOST_{name.upper()}"] = value
    if options.linger is not None:
        extra["CAREPOST_OUTBOX_COMMIT_LINGER_SECONDS"] = str(options.linger)
    figures = measure(
        total,
        workers=options.workers,
        dkim=options.dkim,
        connections=options.connections,
        extra=extra,
    )
    engine = (os.environ.get("CAREPOST_DATABASE_URL") or "sqlite").split(":")[0].split("+")[0]
    delivered = total / figures.deliver_seconds
    bare = total / figures.bare_seconds
    cpu_ms = figures.worker_cpu_seconds * 1000 / total
    ratio = delivered / bare
    sink_ms = figures.sink_cpu_seconds * 1000 / total
    database, total_ms = "n/a", "n/a"
    if figures.database_cpu_seconds is not None:
        database_ms = figures.database_cpu_seconds * 1000 / total
        database, total_ms = f"{database_ms:.2f}", f"{cpu_ms + database_ms + sink_ms:.2f}"
    lines = [
        f"submit messages/s={total / figures.submit_seconds:.0f}"
        f" seconds={figures.submit_seconds:.1f} {figures.load_submit}",
        f"delivered messages/s={delivered:.0f} ratio_to_{TARGET}={delivered / TARGET:.2f}"
        f" messages={total} workers={options.workers} concurrency={options.concurrency}"
        f" dkim={dkim} engine={engine}"
        f" seconds={figures.deliver_seconds:.1f} {figures.load_deliver}",
        # CPU time is what the other processes on a shared machine do not change.
        f"worker dkim={dkim} messages/s={delivered:.0f} cpu_ms_per_message={cpu_ms:.2f}"
        f" cpu_messages/s_per_core={1000 / cpu_ms:.0f}",
        # Where the CPU of a delivered message goes: two cores hold 2 ms of it a message
        # at 1,000 messages/s, all processes together (the bare loop's is beside it).
        f"cpu_ms_per_message workers={cpu_ms:.2f} postgresql={database} sink={sink_ms:.2f}"
        f" total={total_ms} bare_loop={figures.bare_cpu_seconds * 1000 / total:.2f}"
        " (2 cores: 2.00 at 1,000 messages/s)",
        f"bare_loop messages/s={bare:.0f} connections={options.connections} {figures.load_bare}",
        f"ratio_to_bare_loop={ratio:.2f} (goal 0.5)",
    ]
    for line in lines:
        print(f"email_e2e {line}", flush=True)
    return ratio


if __name__ == "__main__":
    run()
