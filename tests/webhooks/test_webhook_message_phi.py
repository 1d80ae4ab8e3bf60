"""Message events sent to webhooks: an endpoint with ``include_phi`` gets the
recipient's address and name, the subject and the contact's name under ``"phi"``;
an endpoint without it gets ids and codes only, never any of those, both ways from a
real message accepted by the API and delivered to a real HTTP receiver."""

from __future__ import annotations

import json

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from carepost.webhooks.delivery import deliver_due
from tests.canaries import phi_value, secret_value
from tests.webhooks.receiver import running_receiver


def _endpoint(client, headers, url, include_phi):
    body = {"url": url, "event_types": ["message.queued"], "include_phi": include_phi}
    response = client.post("/api/v1/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    secret_value(response.json()["secret"])
    return response.json()["id"]


def test_message_events_carry_phi_only_to_endpoints_that_include_it(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    first, last = phi_value("first"), phi_value("last")
    address = f"{phi_value('mail').lower()}@patients.example"
    subject = f"Results for {phi_value('subject')}"
    with runtime.bound_session(tenant[1]) as session:
        contact_id = contacts.create_contact(
            session,
            tenant[1],
            values={"email": address, "first_name": first, "last_name": last},
            actor=SYSTEM,
        ).id
    with running_receiver() as plain_rx, running_receiver() as phi_rx:
        plain = _endpoint(client, headers, plain_rx.url, include_phi=False)
        with_phi = _endpoint(client, headers, phi_rx.url, include_phi=True)
        assert plain != with_phi
        sent = client.post(
            "/api/v1/messages",
            json={
                "contact_id": str(contact_id),
                "from": "care@clinic.example",
                "subject": subject,
                "text": "Your results are ready.",
            },
            headers=headers,
        )
        assert sent.status_code == 201, sent.text
        message_id = sent.json()["id"]
        for _ in range(5):
            if not deliver_due(runtime, tenant_id=tenant[0].id):
                break
        [plain_body] = [r.body for r in plain_rx.requests]
        [phi_body] = [r.body for r in phi_rx.requests]

    for secret in (address, first, last, subject):
        assert secret.encode() not in plain_body
    plain_data = json.loads(plain_body)["data"]
    assert plain_data["message_id"] == message_id and "phi" not in plain_data

    phi_data = json.loads(phi_body)["data"]
    assert phi_data["message_id"] == message_id
    assert phi_data["phi"]["recipient"] == address
    assert phi_data["phi"]["subject"] == subject
    assert phi_data["phi"]["contact"] == {
        "id": str(contact_id),
        "first_name": first,
        "last_name": last,
    }


def test_a_payload_of_its_own_phi_wins_over_the_lookup(client, runtime, tenant, make_api_key):
    """What the caller put under ``phi`` (a clicked URL, say) is kept as given."""
    from carepost.webhooks import service

    headers = make_api_key(tenant)
    with running_receiver() as phi_rx:
        _endpoint(client, headers, phi_rx.url, include_phi=True)
        with runtime.bound_session(tenant[1]) as session:
            service.emit(
                session,
                tenant[0].id,
                "message.queued",
                {"message_id": "not-a-message", "url": "https://clinic.example/x"},
            )
        for _ in range(5):
            if not deliver_due(runtime, tenant_id=tenant[0].id):
                break
        [body] = [r.body for r in phi_rx.requests]
    assert json.loads(body)["data"]["phi"] == {"url": "https://clinic.example/x"}
