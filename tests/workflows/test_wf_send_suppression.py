"""A workflow's Send email step goes through the shared sending path, so suppression
and consent hold for it as for the API: a suppressed address or a revoked (or never
given) marketing consent makes a ``suppressed`` message that never reaches the
receiver, and the run's history records the step as ``suppressed`` with the message
and the reason. Driven by the engine's ticks (the batch handler) and by the per-run
handler, delivered by the real worker to an aiosmtpd sink on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.service import ConsentChange
from carepost.contacts import service as contacts
from carepost.core.runtime import Runtime
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message, MessageEvent
from carepost.messages.sending import SendLimits
from carepost.workflows import handlers, service
from carepost.workflows.models import RunStatus
from carepost.workflows.steps import SendEmail
from tests.messages.smtp_sink import SmtpSink, delivering_to


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def delivering(runtime: Runtime, smtp_sink: SmtpSink) -> Runtime:
    return delivering_to(runtime, smtp_sink)


def _address(journey, contact_id: uuid.UUID) -> str:
    with journey.session() as session:
        return contacts.get_contact(session, journey.tenant_id, contact_id, with_phi=True).email


def _suppress(journey, contact_id: uuid.UUID, reason: str) -> str:
    address = _address(journey, contact_id)
    with journey.session() as session:
        suppressions.add_suppression(
            session, journey.keys, address=address, reason=reason, source="api", actor=SYSTEM
        )
    return address


def _revoke_marketing(journey, contact_id: uuid.UUID) -> None:
    with journey.session() as session:
        consent.record_consents(
            session,
            journey.tenant_id,
            contact_id=contact_id,
            changes=[ConsentChange("email", "marketing", "revoked", "api")],
            actor=SYSTEM,
        )


def _message(journey, message_id: str) -> Message:
    with journey.session() as session:
        row = session.get(Message, uuid.UUID(message_id))
        assert row is not None
        _ = (row.to_address, row.body)
        session.expunge(row)
        return row


def _event_kinds(journey, message_id: str) -> list[str]:
    with journey.session() as session:
        return list(
            session.scalars(
                select(MessageEvent.kind)
                .where(MessageEvent.message_id == uuid.UUID(message_id))
                .order_by(MessageEvent.id)
            )
        )


def _step(journey, workflow_id, contact_id, step_id: str):
    with journey.session() as session:
        run = service.get_run(session, journey.tenant_id, workflow_id, contact_id)
        [row] = [r for r in service.run_history(session, run) if r.step_id == step_id]
        return row.outcome, dict(row.detail or {})


def _mail_then_exit(journey, purpose: str) -> uuid.UUID:
    return journey.workflow(
        [
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "purpose": purpose,
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    )


def test_a_marketing_step_suppresses_bounced_revoked_and_unconsented_contacts(
    journey, delivering, smtp_sink: SmtpSink
):
    workflow = _mail_then_exit(journey, "marketing")
    ok = journey.contact()
    bounced = journey.contact()
    bounced_address = _suppress(journey, bounced, "hard_bounce")
    unsubscribed = journey.contact()
    _suppress(journey, unsubscribed, "unsubscribe")  # a marketing-only suppression
    revoked = journey.contact()
    _revoke_marketing(journey, revoked)
    never = journey.contact(consent_marketing=False)
    people = [ok, bounced, unsubscribed, revoked, never]

    now = datetime.now(UTC)
    journey.enroll(workflow, people, now=now)
    journey.advance(now)

    expected_reasons = {
        bounced: "suppressed:hard_bounce",
        unsubscribed: "suppressed_for_marketing:unsubscribe",
        revoked: "consent_revoked:marketing",
        never: "consent_missing:marketing",
    }
    sent_ids: dict[uuid.UUID, str] = {}
    for person in people:
        run = journey.run(workflow, person)
        # A suppressed email does not stop the journey: the run goes on to its next step.
        assert run.status == RunStatus.COMPLETED, (person, run.status)
        assert [s for s, _ in journey.history(workflow, person)] == ["mail", "done"]
        outcome, detail = _step(journey, workflow, person, "mail")
        message_id = run.sent["mail"]
        assert detail["message_id"] == message_id
        sent_ids[person] = message_id
        row = _message(journey, message_id)
        assert row.contact_id == person and row.purpose == "marketing"
        if person == ok:
            assert outcome == "sent" and row.state == "queued"
        else:
            assert outcome == "suppressed", (person, outcome, detail)
            assert row.state == "suppressed"
            assert expected_reasons[person] in row.state_reason.split(",")
            assert detail["reason"] == row.state_reason
            assert _event_kinds(journey, message_id) == ["suppressed"]
    assert journey.emails() == len(people)  # every decision is a row, none dropped

    deliver_due_messages(delivering, budget_seconds=30)
    received = [r for r in smtp_sink.received if r.carepost_id in set(sent_ids.values())]
    assert [r.carepost_id for r in received] == [sent_ids[ok]]
    assert received[0].recipients == [_address(journey, ok)]
    assert all(bounced_address not in r.recipients for r in smtp_sink.received)
    assert _message(journey, sent_ids[ok]).state == "delivered"
    for person in people[1:]:
        # The worker never picks a suppressed message up.
        row = _message(journey, sent_ids[person])
        assert (row.state, row.attempts, row.sent_at) == ("suppressed", 0, None)


def test_a_transactional_step_needs_no_opt_in_but_still_honours_a_hard_bounce(
    journey, delivering, smtp_sink: SmtpSink
):
    workflow = _mail_then_exit(journey, "transactional")
    bounced = journey.contact()
    _suppress(journey, bounced, "hard_bounce")
    revoked = journey.contact()
    _revoke_marketing(journey, revoked)  # marketing consent says nothing of treatment mail
    now = datetime.now(UTC)
    journey.enroll(workflow, [bounced, revoked], now=now)
    journey.advance(now)
    assert _step(journey, workflow, bounced, "mail")[0] == "suppressed"
    assert _step(journey, workflow, revoked, "mail")[0] == "sent"
    bounced_id = journey.run(workflow, bounced).sent["mail"]
    revoked_id = journey.run(workflow, revoked).sent["mail"]
    assert _message(journey, bounced_id).state_reason == "suppressed:hard_bounce"
    deliver_due_messages(delivering, budget_seconds=30)
    ids = {r.carepost_id for r in smtp_sink.received}
    assert revoked_id in ids and bounced_id not in ids
    assert _message(journey, bounced_id).state == "suppressed"


def test_the_per_run_send_handler_records_a_suppressed_send(journey, runtime):
    """The per-run handler (the one a step type without a batch handler would use, and
    the registry's entry for send_email) decides the same way as the batch one."""
    workflow_id = _mail_then_exit(journey, "marketing")
    bounced = journey.contact()
    _suppress(journey, bounced, "hard_bounce")
    now = datetime.now(UTC)
    journey.enroll(workflow_id, [bounced], now=now)
    step = SendEmail.model_validate(
        {
            "id": "mail",
            "type": "send_email",
            "template_id": str(journey.template_id),
            "purpose": "marketing",
            "next": "done",
        }
    )
    with journey.session() as session:
        workflow = service.get_workflow(session, journey.tenant_id, workflow_id)
        run = service.get_run(session, journey.tenant_id, workflow_id, bounced)
        contact = contacts.get_contact(session, journey.tenant_id, bounced)
        context = handlers.RunContext(
            session=session,
            keys=journey.keys,
            workflow=workflow,
            run=run,
            contact=contact,
            now=now,
            limits=SendLimits.from_settings(runtime.settings),
            seq=1,
        )
        transition = handlers.HANDLERS["send_email"](step, context, False)
        assert transition.outcome == "suppressed" and transition.next_step == "done"
        assert transition.detail is not None
        assert transition.detail["reason"] == "suppressed:hard_bounce"
        message_id = transition.detail["message_id"]
        assert run.sent == {"mail": message_id}
    row = _message(journey, message_id)
    assert (row.state, row.state_reason) == ("suppressed", "suppressed:hard_bounce")
