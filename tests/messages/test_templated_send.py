"""Sending with a stored template (carepost.templates): personalised on arrival, refused
before queuing when it cannot render, compiled once per batch."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from carepost.messages import ports
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from carepost.templates import service as templates
from tests.messages.smtp_sink import SmtpSink

V1 = "/api/v1"


def _template(runtime, tenant, *, subject: str, html: str) -> str:
    with runtime.bound_session(tenant[1]) as session:
        row = templates.create_template(
            session,
            tenant[0].id,
            name=f"reminder-{uuid.uuid4().hex[:8]}",
            kind="transactional",
            subject=subject,
            html=html,
            text=None,
            actor=SYSTEM,
        )
        return str(row.id)


def _contact(runtime, tenant, first_name: str) -> str:
    with runtime.bound_session(tenant[1]) as session:
        values = {"email": f"{first_name.lower()}-{uuid.uuid4().hex[:6]}@example.org"}
        values["first_name"] = first_name
        return str(contacts.create_contact(session, tenant[1], values=values, actor=SYSTEM).id)


def _count(runtime, tenant) -> int:
    with runtime.database.session() as session:
        query = select(func.count()).select_from(Message).where(Message.tenant_id == tenant[0].id)
        return int(session.scalar(query) or 0)


def test_a_message_sent_with_a_stored_template_arrives_personalised(
    client, delivering, smtp_sink: SmtpSink, tenant, make_api_key
):
    template_id = _template(
        delivering,
        tenant,
        subject="Your visit on {{ day }}",
        html="<p>Dear {{ contact.first_name }}, see you on {{ day }}.</p>",
    )
    contact_id = _contact(delivering, tenant, "Rosalind")
    response = client.post(
        f"{V1}/messages",
        json={
            "contact_id": contact_id,
            "from": "care@clinic.example",
            "template_id": template_id,
            "data": {"day": "Tuesday"},
        },
        headers=make_api_key(tenant),
    )
    assert response.status_code == 201, response.text
    with delivering.database.session() as session:
        # The template reads a PHI field (the first name), so the protection policy
        # would send it to the portal (tests/protection); here: what the rendering made.
        session.execute(
            update(Message)
            .where(Message.id == uuid.UUID(response.json()["id"]))
            .values(uses_phi=False)
        )
    deliver_due_messages(delivering, budget_seconds=30)
    [received] = smtp_sink.received
    message = received.message
    assert message["Subject"] == "Your visit on Tuesday"
    html = message.get_body(("html",)).get_content()
    assert "Dear Rosalind, see you on Tuesday." in html
    # The text part is generated from the HTML when the template has none.
    assert "Dear Rosalind" in message.get_body(("plain",)).get_content()
    with delivering.bound_session(tenant[1]) as session:
        stored = session.get(Message, uuid.UUID(response.json()["id"]))
        assert stored is not None and str(stored.template_id) == template_id


def test_an_unknown_variable_is_a_clear_422_before_anything_is_queued(
    client, runtime, tenant, make_api_key
):
    template_id = _template(
        runtime, tenant, subject="Reminder", html="<p>Your code is {{ code }}</p>"
    )
    before = _count(runtime, tenant)
    response = client.post(
        f"{V1}/messages",
        json={"to": "a@example.org", "from": "care@clinic.example", "template_id": template_id},
        headers=make_api_key(tenant),
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["pointer"] == "#/body/html"
    assert problem["errors"][0]["detail"].startswith("code is undefined in the html")
    assert _count(runtime, tenant) == before


def test_a_batch_compiles_each_template_once(client, runtime, tenant, make_api_key, monkeypatch):
    template_id = _template(
        runtime,
        tenant,
        subject="Hi {{ contact.first_name }}",
        html="<p>{{ day }}</p>",
    )
    prepared: list[str] = []
    real = ports.prepare_template

    def counting(session, keys, template, *, variant=None):
        prepared.append(str(template))
        return real(session, keys, template, variant=variant)

    monkeypatch.setattr(ports, "prepare_template", counting)
    items = [
        {"contact_id": _contact(runtime, tenant, name), "from": "care@clinic.example"}
        | {"template_id": template_id, "data": {"day": "Monday"}}
        for name in ("Ada", "Grace", "Edsger")
    ]
    response = client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
    )
    assert response.status_code in (200, 201, 207), response.text
    results = response.json()["items"]
    assert [r["state"] for r in results] == ["queued"] * 3
    assert prepared == [template_id]
    with runtime.bound_session(tenant[1]) as session:
        subjects = sorted(
            session.get(Message, uuid.UUID(r["id"])).subject  # type: ignore[union-attr]
            for r in results
        )
    assert subjects == ["Hi Ada", "Hi Edsger", "Hi Grace"]
