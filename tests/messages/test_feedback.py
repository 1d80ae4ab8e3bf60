"""The outbox and feedback together: a message delivered through the worker, its bounce
(RFC 3464 DSN) sent back to its VERP return path at the inbound listener, the message
bounced, the address suppressed and the webhook written without PHI."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import aiosmtplib
import pytest
from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.consent.suppression import suppression_match
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.delivery.inbound import inbound_controller
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message, MessageEvent
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.webhooks import service as webhooks
from carepost.webhooks.models import WebhookDelivery
from tests.canaries import phi_value
from tests.delivery.samples import fill
from tests.environment import free_port
from tests.messages.smtp_sink import SmtpSink


@pytest.fixture
def listener(delivering):
    controller = inbound_controller(delivering, host="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()


def _report(listener, data: bytes, recipient: str) -> str:
    """Send as a reporting MTA does: the null sender, one recipient; the DATA reply."""

    async def transaction() -> str:
        async with aiosmtplib.SMTP(hostname=listener.hostname, port=listener.port) as smtp:
            await smtp.mail("")
            await smtp.rcpt(recipient)
            return (await smtp.data(data)).message

    # A thread of its own: the browser tests keep an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, transaction()).result()


def test_a_dsn_for_a_delivered_message_bounces_it_and_suppresses_the_address(
    delivering, smtp_sink: SmtpSink, tenant, listener
):
    address = f"{phi_value('mail').lower()}-{uuid.uuid4().hex[:6]}@patients.example"
    with delivering.bound_session(tenant[1]) as session:
        webhooks.create_endpoint(
            session,
            tenant[0].id,
            url="https://hooks.example.org/carepost",
            event_types=["message.delivered", "message.bounced"],
            actor=SYSTEM,
        )
        [sent] = send_messages(
            session,
            tenant[1],
            [
                (
                    MessageIn.model_validate(
                        {"from": "care@clinic.example", "to": address}
                        | {"subject": "Your results", "text": "They are ready."}
                    ),
                    None,
                )
            ],
            SendContext(SYSTEM, SendLimits(1024 * 1024, "https://testserver")),
        )
    deliver_due_messages(delivering, budget_seconds=30)
    [received] = smtp_sink.received
    with delivering.bound_session(tenant[1]) as session:
        assert session.get(Message, sent.id).state == "delivered"  # type: ignore[union-attr]

    sample = fill(
        "postfix_dsn_user_unknown.eml",
        message_id=sent.id,
        recipient=address,
        secret=cached_feedback_secret(delivering.settings),
        bounce_domain=delivering.settings.bounce_domain,
    )
    # The bounce goes back to the return path the receiver saw: the message's VERP address.
    assert received.mail_from == sample.return_path
    assert _report(listener, sample.data, received.mail_from).startswith("2.0.0")

    with delivering.bound_session(tenant[1]) as session:
        message = session.get(Message, sent.id)
        assert message is not None and message.state == "bounced"
        match = suppression_match(session, tenant[1], address)
        assert match is not None and match.reason == "hard_bounce"
        kinds = session.scalars(
            select(MessageEvent.kind)
            .where(MessageEvent.message_id == sent.id)
            .order_by(MessageEvent.id)
        ).all()
        assert kinds == ["queued", "delivered", "bounced"]
        deliveries = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.tenant_id == tenant[0].id)
            .order_by(WebhookDelivery.next_attempt_at)
        ).all()
        assert [d.event_type for d in deliveries] == ["message.delivered", "message.bounced"]
        bounced = deliveries[-1].payload["data"]
        assert bounced["message_id"] == str(sent.id)
        assert (bounced["bounce"], bounced["status"]) == ("hard", "5.1.1")
        assert all(address not in str(d.payload) for d in deliveries)
