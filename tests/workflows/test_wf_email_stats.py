"""The console's per-email-step figures: sent from the run history, opened and clicked
as distinct messages people (not machines) engaged with, computed in SQL on both
engines from opens and clicks recorded through the real tracking routes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.messages.models import MessageEvent
from carepost.tracking.links import click_token, open_token
from carepost.workflows import console_queries

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Safari/605.1.15"
)


def _two_emails(journey):
    return journey.workflow(
        [
            {
                "id": "hello",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "later",
            },
            {
                "id": "later",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    )


def test_sent_opened_and_clicked_per_email_step(journey, client):
    workflow = _two_emails(journey)
    people = [journey.contact() for _ in range(4)]
    now = datetime.now(UTC)
    journey.enroll(workflow, people, now=now)
    journey.advance(now)
    sent = [uuid.UUID(journey.run(workflow, person).sent["hello"]) for person in people]
    secret = cached_feedback_secret(journey.runtime.settings)
    person_agent = {"User-Agent": BROWSER}

    for _ in range(2):  # the first person opens twice and clicks: one of each
        client.get(f"/t/o/{open_token(sent[0], secret=secret)}.gif", headers=person_agent)
    client.get(
        f"/t/c/{click_token(sent[0], 0, 'https://clinic.example/a', secret=secret)}",
        headers=person_agent,
        follow_redirects=False,
    )
    client.get(f"/t/o/{open_token(sent[1], secret=secret)}.gif", headers=person_agent)
    with journey.session() as session:  # a machine's open of the third is not counted
        session.add(
            MessageEvent(
                tenant_id=journey.tenant_id,
                message_id=sent[2],
                kind="opened",
                occurred_at=now,
                detail={"machine": True, "machine_reason": "apple_mpp"},
            )
        )

    with journey.session() as session:
        stats = console_queries.email_stats(session, journey.tenant_id, workflow)
    assert set(stats) == {"hello", "later"}
    hello, later = stats["hello"], stats["later"]
    assert (hello.sent, hello.opened, hello.clicked) == (4, 2, 1)
    assert (later.sent, later.opened, later.clicked) == (4, 0, 0)


def test_a_workflow_without_email_steps_has_no_figures(journey):
    workflow = journey.workflow([{"id": "done", "type": "exit"}])
    with journey.session() as session:
        assert console_queries.email_stats(session, journey.tenant_id, workflow) == {}
