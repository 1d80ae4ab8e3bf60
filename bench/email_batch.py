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
by on a shared machine. The request bodies are encoded to JSON before the clock
starts: the client's encoding is not the API's work.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.contacts_batch import _setup
from carepost.accounts import apikeys
from carepost.accounts.permissions import PERMISSIONS
from carepost.api.app import create_app
from carepost.audit.service import SYSTEM
from carepost.contacts import upserts
from carepost.domains.models import SendingDomain

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


def run() -> float:
    workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
    url = os.environ.get("CAREPOST_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    runtime, keys, tenant_id, close = _setup(url, workdir)
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
        with TestClient(create_app(runtime), base_url="https://bench") as client:
            started, cpu_started = time.perf_counter(), time.process_time()
            for number, (body, size) in enumerate(zip(bodies, sizes, strict=True)):
                response = client.post("/api/v1/messages/batch", content=body, headers=headers)
                assert response.status_code == 200, response.text[:500]
                queued = response.json()["queued"]
                assert queued == size, f"batch {number}: {queued} queued"
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        rate = TOTAL / elapsed
        engine = runtime.database.engine.dialect.name
        print(
            f"email_batch messages/s={rate:.0f} ratio_to_{TARGET}_messages_per_s="
            f"{rate / TARGET:.2f} messages={TOTAL} batch={BATCH} engine={engine}",
            flush=True,
        )
        # On a shared machine the wall clock also counts other processes' turns; the
        # CPU time of this process (the API and, on SQLite, the database) does not.
        print(
            f"email_batch cpu_messages/s={TOTAL / cpu:.0f} cpu_us_per_message="
            f"{cpu / TOTAL * 1e6:.0f} (this process's CPU time) load="
            + " ".join(f"{value:.2f}" for value in os.getloadavg()),
            flush=True,
        )
        return rate
    finally:
        close()


if __name__ == "__main__":
    run()
