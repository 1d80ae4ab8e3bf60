"""Call Webhook: a signed ``workflow.step`` event with ids only, sent by the webhook
worker to a real receiver on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from carepost.audit.service import SYSTEM
from carepost.core.errors import ValidationFailed
from carepost.webhooks import service as webhooks
from carepost.webhooks.delivery import deliver_due
from carepost.webhooks.signing import HEADER, verify_signature
from tests.conftest import secret_value
from tests.webhooks.receiver import running_receiver


def test_the_webhook_step_queues_a_signed_event_without_phi(journey):
    with running_receiver() as receiver:
        with journey.session() as session:
            created = webhooks.create_endpoint(
                session,
                journey.tenant_id,
                url=receiver.url,
                event_types=["message.bounced"],
                allow_loopback_http=True,
                actor=SYSTEM,
            )
            endpoint_id, secret = created.endpoint.id, created.secret
        secret_value(secret)
        workflow = journey.workflow(
            [{"id": "tell", "type": "webhook", "endpoint_id": str(endpoint_id)}]
        )
        person = journey.contact(first_name="Zebulon")
        start = datetime.now(UTC)
        journey.enroll(workflow, [person], now=start)
        journey.advance(start)
        assert journey.history(workflow, person) == [("tell", "queued")]
        assert deliver_due(journey.runtime, tenant_id=journey.tenant_id) == 1
        [request] = receiver.requests
    assert verify_signature(request.headers[HEADER], request.body, secret)
    event = json.loads(request.body)
    assert event["type"] == "workflow.step"
    assert event["data"] == {
        "workflow_id": str(workflow),
        "run_id": str(journey.run(workflow, person).id),
        "step_id": "tell",
        "contact_id": str(person),
    }
    assert b"Zebulon" not in request.body and b"example.org" not in request.body


def test_a_webhook_endpoint_of_another_tenant_is_refused_at_activation(make_journey):
    ours, theirs = make_journey(), make_journey()
    with theirs.session() as session:
        created = webhooks.create_endpoint(
            session,
            theirs.tenant_id,
            url="https://hooks.example/x",
            event_types=["message.bounced"],
            actor=SYSTEM,
        )
        secret_value(created.secret)
    with pytest.raises(ValidationFailed) as refused:
        ours.workflow([{"id": "tell", "type": "webhook", "endpoint_id": str(created.endpoint.id)}])
    assert refused.value.errors[0].field == "#/body/draft/steps/0/endpoint_id"
