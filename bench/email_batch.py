"""Benchmark: messages accepted into the outbox by ``POST /api/v1/messages/batch``.

Runs the real application in process (TestClient: JSON parsing, validation, API-key
authentication, personalization, consent and suppression look-ups, encryption,
blind indexes, the bulk inserts and the audit event), on the engine configured for
carepost (``CAREPOST_DATABASE_URL``; SQLite in a temporary directory when unset).

``BENCH_MESSAGES`` messages (50,000 by default) go in batches of ``BENCH_BATCH``
(10,000, the API's maximum); half are addressed to contacts (personalized from the
contact's first name), half to plain addresses with per-message ``data``. Prints
``email_batch messages/s=<n> ratio_to_10000_messages_per_s=<r>`` (issue 5: the
batch API accepts at least 10,000 messages/s into the outbox), then the process's
CPU time per message and the load (``os.getloadavg``), the figure to compare runs
by on a shared machine. On PostgreSQL (a server on this host) it also prints the CPU
time of the backends that served the run (from ``/proc/<pid>/stat``), per message.
The request bodies are encoded to JSON before the clock starts: the client's encoding
is not the API's work.

On PostgreSQL it then measures the API as a deployment serves it: ``carepost serve
--workers 2`` in its own processes and four clients posting at once over loopback HTTP
(``--served N``: N server processes and 2N clients; ``--served 0`` skips it), another
``TOTAL`` messages, and prints ``email_batch served processes=<n> clients=<n>
messages/s=<n> ratio_to_10000_messages_per_s=<r>`` with the server processes' and the
PostgreSQL backends' CPU time per message. SQLite has one writer: it is not served
with several processes.

``--profile PATH``: write a cProfile of the second request (10,000 messages by
default: the first one warms the caches) to ``PATH`` (``python -m pstats PATH``).
"""

from __future__ import annotations

import cProfile
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from bench import served
from bench.contacts_batch import _setup
from bench.csv_import import _backend_cpu_seconds
from carepost.accounts import apikeys
from carepost.accounts.permissions import PERMISSIONS
from carepost.api.app import create_app
from carepost.audit.service import SYSTEM
from carepost.contacts import upserts
from carepost.core.runtime import Runtime
from carepost.domains.models import SendingDomain
from carepost.messages import api as messages_api

TOTAL = int(os.environ.get("BENCH_MESSAGES", "50000"))
BATCH = int(os.environ.get("BENCH_BATCH", "10000"))
TARGET = 10_000


def _items(start: int, count: int, contact_ids: list[str]) -> list[dict[str, Any]]:
    items = []
    for n in range(start, start + count):
        base: dict[str, Any] = {
            "from": "care@clinic.example",
            "from_name": "Riverside Clinic",
            "subject": "Your appointment on {{ day }}",
            "html": "<p>Dear {{ name }}, we look forward to seeing you on {{ day }}.</p>",
            "data": {"day": f"2027-01-{1 + n % 28:02d}", "name": f"Patient {n}"},
            "tags": ["reminder"],
            "idempotency_key": f"bench-{n}",
        }
        if n % 2 and contact_ids:
            base["contact_id"] = contact_ids[n % len(contact_ids)]
            base["subject"] = "Hello {{ contact.first_name }}, your appointment"
        else:
            base["to"] = f"patient{n}@example.org"
        items.append(base)
    return items


def _load() -> str:
    """The machine's load averages (1, 5, 15 minutes): what else the cores were doing."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _served_processes(options: Sequence[str], engine: str) -> int:
    if "--served" not in options:
        return 2 if engine == "postgresql" else 0
    at = list(options).index("--served")
    try:
        processes = int(options[at + 1])
    except (IndexError, ValueError):
        raise SystemExit("email_batch: --served needs a number of server processes") from None
    if processes and engine != "postgresql":
        raise SystemExit("email_batch: --served needs PostgreSQL (SQLite has one writer)")
    return processes


def _check_answer(sizes: Sequence[int]) -> Callable[[int, Any], None]:
    def check(number: int, response: Any) -> None:
        assert response.status_code == 200, response.text[:500]
        queued = response.json()["queued"]
        assert queued == sizes[number], f"batch {number}: {queued} queued"

    return check


def _run_served(
    runtime: Runtime, env: dict[str, str], processes: int, secret: str, contact_ids: list[str]
) -> float:
    """Another ``TOTAL`` messages through ``carepost serve --workers processes``, posted
    by twice as many clients at once (a process is never idle for want of a request);
    prints the rate and the CPU per message."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    clients = 2 * processes
    # Two requests a client, of equal size (at most BATCH): the clients finish together,
    # no request runs alone at the end.
    batch = min(BATCH, -(-TOTAL // (2 * clients)))
    starts = range(TOTAL, 2 * TOTAL, batch)
    bodies = [
        json.dumps({"items": _items(start, min(batch, 2 * TOTAL - start), contact_ids)}).encode()
        for start in starts
    ]
    sizes = [min(batch, 2 * TOTAL - start) for start in starts]
    # Every server process answers a small batch before the clock starts (its first
    # request opens its connections and fills its caches).
    warm_size = max(1, min(50, BATCH))
    warm = [
        json.dumps({"items": _items(3 * TOTAL + n * warm_size, warm_size, contact_ids)}).encode()
        for n in range(4 * processes)
    ]
    with served.serve(env, processes) as server:
        served.post_concurrently(
            server.base_url,
            "/api/v1/messages/batch",
            warm,
            headers,
            processes,
            _check_answer([warm_size] * len(warm)),
        )
        workers = server.worker_pids()
        backends = served.client_backends(runtime.database.engine)
        cpu_before = _backend_cpu_seconds(workers), _backend_cpu_seconds(backends)
        elapsed = served.post_concurrently(
            server.base_url,
            "/api/v1/messages/batch",
            bodies,
            headers,
            clients,
            _check_answer(sizes),
        )
        server_cpu = _backend_cpu_seconds(workers) - cpu_before[0]
        # A backend a server process opened during the run counts from zero.
        backends |= served.client_backends(runtime.database.engine)
        backend_cpu = _backend_cpu_seconds(backends) - cpu_before[1]
    rate = TOTAL / elapsed
    print(
        f"email_batch served processes={processes} clients={clients} "
        f"messages/s={rate:.0f} "
        f"ratio_to_{TARGET}_messages_per_s={rate / TARGET:.2f} messages={TOTAL} batch={batch}"
        " engine=postgresql (carepost serve, loopback HTTP)",
        flush=True,
    )
    print(
        f"email_batch served server_cpu_us_per_message={server_cpu / TOTAL * 1e6:.0f}"
        f" postgres_cpu_us_per_message={backend_cpu / TOTAL * 1e6:.0f} load={_load()}",
        flush=True,
    )
    return rate


def _profile_path(options: Sequence[str]) -> str | None:
    if "--profile" not in options:
        return None
    at = list(options).index("--profile")
    if at + 1 >= len(options):
        raise SystemExit("email_batch: --profile needs a file name")
    return options[at + 1]


def _profiled(profiler: cProfile.Profile, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` profiled (it runs in the API's thread pool, where the request's work
    is: a profiler enabled in this thread would not see it)."""

    def profiled(*args: Any) -> Any:
        profiler.enable()
        try:
            return function(*args)
        finally:
            profiler.disable()

    return profiled


def run(options: Sequence[str] = ()) -> float:
    profile_to = _profile_path(options)
    workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    url = os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    runtime, keys, tenant_id, close = _setup(url, workdir)
    processes = _served_processes(options, runtime.database.engine.dialect.name)
    try:
        with runtime.bound_session(keys) as session:
            # The From domain must be a verified sending domain (domains/senders.py);
            # the bench has no DNS to publish in, so it is recorded as verified.
            session.add(
                SendingDomain(
                    tenant_id=tenant_id,
                    name="clinic.example",
                    state="verified",
                    created_by_type="system",
                    created_by_id="bench",
                )
            )
            people = [
                {"email": f"contact{n}@example.org", "first_name": f"First{n}"} for n in range(5000)
            ]
            results = upserts.upsert_contacts(session, keys, people, match="email", actor=SYSTEM)
            contact_ids = [str(r.id) for r in results if r.id is not None]
            _key, secret = apikeys.create_api_key(
                session,
                tenant_id=tenant_id,
                name="bench",
                scopes=sorted(PERMISSIONS),
                creator_permissions=frozenset(PERMISSIONS),
                actor=SYSTEM,
            )
        headers = {"Authorization": f"Bearer {secret}"}
        headers["Content-Type"] = "application/json"
        bodies = [
            json.dumps({"items": _items(start, min(BATCH, TOTAL - start), contact_ids)}).encode()
            for start in range(0, TOTAL, BATCH)
        ]
        sizes = [min(BATCH, TOTAL - start) for start in range(0, TOTAL, BATCH)]
        engine = runtime.database.engine
        backends: set[int] = set()
        if engine.dialect.name == "postgresql":

            @event.listens_for(engine, "connect")
            def _remember_backend(connection: Any, _record: Any) -> None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    backends.add(cursor.fetchone()[0])

            engine.dispose()  # the connections made from now on are counted
        profiler = cProfile.Profile() if profile_to else None
        sending = messages_api._send_batch
        with TestClient(create_app(runtime), base_url="https://bench") as client:
            # The API's first request opens the pool's connection: its backend is known
            # before the clock starts (a backend first seen later counts from zero).
            assert client.get("/readyz").status_code == 200
            backend_started = _backend_cpu_seconds(backends)
            started, cpu_started = time.perf_counter(), time.process_time()
            for number, (body, size) in enumerate(zip(bodies, sizes, strict=True)):
                if profiler is not None and number == min(1, len(bodies) - 1):
                    messages_api._send_batch = _profiled(profiler, sending)
                try:
                    response = client.post("/api/v1/messages/batch", content=body, headers=headers)
                finally:
                    messages_api._send_batch = sending
                assert response.status_code == 200, response.text[:500]
                queued = response.json()["queued"]
                assert queued == size, f"batch {number}: {queued} queued"
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            backend_cpu = _backend_cpu_seconds(backends) - backend_started
        rate = TOTAL / elapsed
        print(
            f"email_batch messages/s={rate:.0f} ratio_to_{TARGET}_messages_per_s="
            f"{rate / TARGET:.2f} messages={TOTAL} batch={BATCH} engine={engine.dialect.name}",
            flush=True,
        )
        # On a shared machine the wall clock also counts other processes' turns; the
        # CPU time of this process (the API and, on SQLite, the database) does not.
        print(
            f"email_batch cpu_messages/s={TOTAL / cpu:.0f} cpu_us_per_message="
            f"{cpu / TOTAL * 1e6:.0f} (this process's CPU time) load={_load()}",
            flush=True,
        )
        if backends:
            print(
                f"email_batch postgres_backend_cpu_us_per_message={backend_cpu / TOTAL * 1e6:.0f}"
                f" backends={len(backends)} (utime+stime from /proc)",
                flush=True,
            )
        if profiler is not None and profile_to:
            profiler.dump_stats(profile_to)
            print(f"email_batch profile={profile_to}", flush=True)
        if processes:
            settings = runtime.settings
            env = {
                "CAREPOST_DATABASE_URL": url,
                "CAREPOST_MASTER_KEY_FILE": str(settings.master_key_file),
                "CAREPOST_DATA_DIR": str(settings.data_dir),
            }
            if settings.database_schema:
                env["CAREPOST_DATABASE_SCHEMA"] = settings.database_schema
            _run_served(runtime, env, processes, secret, contact_ids)
        return rate
    finally:
        close()


if __name__ == "__main__":
    run()
