"""Benchmark: the workflow engine (issue 7) on a controlled clock.

``BENCH_WORKFLOW_CONTACTS`` contacts (20,000 by default; the issue's figure is for
1,000,000) are enrolled from a list into Wait 1 h -> Send Email -> Wait for Event
(open, 3 days) -> Branch (language) -> Add to List, then the engine is advanced
through simulated time by one worker in this process. Prints the enrollment rate
(issue 7: 1M contacts in <= 60 s, i.e. >= 16,667/s) and step transitions per
second (goal >= 5,000/s on PostgreSQL with 2 workers), with the machine's load.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.scratch import scratch_tenant
from carepost.audit.service import SYSTEM
from carepost.contacts import lists, upserts
from carepost.domains.models import SendingDomain
from carepost.templates import service as templates
from carepost.workflows import engine, service, triggers

CONTACTS = int(os.environ.get("BENCH_WORKFLOW_CONTACTS", "20000"))
ENROLL_TARGET = 1_000_000 / 60
TRANSITIONS_TARGET = 5_000
T0 = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


def _load() -> str:
    return " ".join(os.getloadavg().__repr__().strip("()").split(", "))


def run() -> None:
    with scratch_tenant() as scratch:
        runtime, keys = scratch.runtime, scratch.keys
        tenant_id = keys.tenant_id
        with runtime.bound_session(keys) as session:
            session.add(
                SendingDomain(
                    tenant_id=tenant_id,
                    name="clinic.example",
                    state="verified",
                    created_by_type="system",
                    created_by_id="bench",
                )
            )
            template = templates.create_template(
                session,
                tenant_id,
                name="hello",
                kind="transactional",
                subject="Your visit",
                html="<p>See you soon.</p>",
                text=None,
                actor=SYSTEM,
            )
            audience = lists.create_list(
                session, tenant_id, name="all", description="", actor=SYSTEM
            )
            engaged = lists.create_list(
                session, tenant_id, name="engaged", description="", actor=SYSTEM
            )
        ids: list[uuid.UUID] = []
        for start in range(0, CONTACTS, 5000):
            people = [
                {"email": f"p{n}@example.org"} for n in range(start, min(CONTACTS, start + 5000))
            ]
            with runtime.bound_session(keys) as session:
                results = upserts.upsert_contacts(
                    session, keys, people, match="email", actor=SYSTEM
                )
                batch = [r.id for r in results if r.id is not None]
                lists.change_members(
                    session, tenant_id, audience.id, add=batch, remove=[], actor=SYSTEM
                )
                ids += batch
        steps = [
            {"id": "pause", "type": "wait_duration", "duration": {"hours": 1}, "next": "mail"},
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(template.id),
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
                    {"rule": {"field": "language", "op": "equals", "value": "es"}, "next": "tag"}
                ],
                "fallback": "tag",
            },
            {"id": "tag", "type": "list_add", "list_id": str(engaged.id)},
        ]
        with runtime.bound_session(keys) as session:
            workflow = service.create_workflow(
                session,
                tenant_id,
                name="journey",
                sender_address="care@clinic.example",
                draft={"steps": steps},
                actor=SYSTEM,
            )
            service.change_status(session, tenant_id, workflow.id, "activate", actor=SYSTEM, now=T0)
            workflow_id = workflow.id
        started = time.perf_counter()
        with runtime.bound_session(keys) as session:
            outcome = triggers.enroll_list(
                session, tenant_id, workflow_id, audience.id, actor=SYSTEM, now=T0
            )
        enroll_seconds = time.perf_counter() - started
        assert outcome.enrolled == len(ids), outcome
        transitions = 0
        started = time.perf_counter()
        for moment in (T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1, days=3)):
            while True:
                done = engine.advance_due_runs(runtime, now=moment, max_batches=1000)
                transitions += done
                if not done:
                    break
        advance_seconds = time.perf_counter() - started
        with runtime.bound_session(keys) as session:
            runs = service.step_counts(session, tenant_id, workflow_id).runs
        assert runs == {"completed": len(ids)}, runs
        engine_name = runtime.database.engine.dialect.name
        enroll_rate = len(ids) / enroll_seconds
        rate = transitions / advance_seconds
        print(
            f"workflows enroll/s={enroll_rate:.0f} ratio_to_{ENROLL_TARGET:.0f}_per_s="
            f"{enroll_rate / ENROLL_TARGET:.2f} contacts={len(ids)} engine={engine_name} "
            f"load={_load()}",
            flush=True,
        )
        print(
            f"workflows transitions/s={rate:.0f} ratio_to_{TRANSITIONS_TARGET}_per_s="
            f"{rate / TRANSITIONS_TARGET:.2f} transitions={transitions} workers=1 "
            f"engine={engine_name} load={_load()}",
            flush=True,
        )


if __name__ == "__main__":
    run()
