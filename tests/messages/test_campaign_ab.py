"""Campaigns with a stored template: the template's checks (tenant, kind, CAN-SPAM,
purpose), and an A/B test of its variants from split to winner, chosen on real
deliveries (to an aiosmtpd sink on loopback) and real tracking hits."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.service import ConsentChange
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.core.database import utcnow
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.messages.campaigns import advance_campaigns
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Campaign, Message
from carepost.templates import service as templates
from carepost.templates.models import Template
from carepost.templates.variants import VariantSplit, assign_variant
from carepost.tenancy import service as tenancy
from carepost.tracking.links import click_token, open_token
from tests.messages.smtp_sink import SmtpSink

V1 = "/api/v1"
ADDRESS = "100 Main Street\nSpringfield, IL 62701"
FOOTER = (
    '<p>{{ organization.physical_address }}</p><p><a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Safari/605.1.15"
)


@pytest.fixture
def clinic(runtime, make_tenant):
    tenant = make_tenant()
    with runtime.bound_session(tenant[1]) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=tenant[0].id, actor=SYSTEM, physical_address=ADDRESS
        )
    return tenant


def _template(runtime, tenant, *, kind="marketing", html=None, variants=()) -> str:
    with runtime.bound_session(tenant[1]) as session:
        row = templates.create_template(
            session,
            tenant[0].id,
            name=f"news-{uuid.uuid4().hex[:8]}",
            kind=kind,
            subject="Flu shots at the clinic",
            html=html or f"<p>Flu shots are in.</p>{FOOTER}",
            text=None,
            actor=SYSTEM,
        )
        for values in variants:
            templates.create_variant(session, tenant[0].id, row.id, values=values, actor=SYSTEM)
        return str(row.id)


def _audience(runtime, tenant, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    tenant_row, keys = tenant
    ids = []
    with runtime.bound_session(keys) as session:
        for n in range(count):
            contact = contacts.create_contact(
                session,
                keys,
                values={"email": f"ab{n}-{uuid.uuid4().hex[:6]}@example.org", "first_name": "N"},
                actor=SYSTEM,
            )
            consent.record_consents(
                session,
                tenant_row.id,
                contact_id=contact.id,
                changes=[ConsentChange("email", "marketing", "granted", "api")],
                actor=SYSTEM,
            )
            ids.append(contact.id)
        row = lists.create_list(
            session, tenant_row.id, name=f"l-{uuid.uuid4().hex[:6]}", description="", actor=SYSTEM
        )
        lists.change_members(session, tenant_row.id, row.id, add=ids, remove=[], actor=SYSTEM)
    return row.id, ids


def _body(list_id, template_id, **extra):
    return {
        "name": "Flu shots",
        "list_id": str(list_id),
        "template_id": template_id,
        "from": "news@clinic.example",
        "from_name": "The Clinic",
    } | extra


def _messages(runtime, tenant, campaign_id) -> list[Message]:
    with runtime.bound_session(tenant[1]) as session:
        return list(
            session.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign_id)))
        )


def test_a_campaign_sends_a_stored_marketing_template(
    client, delivering, smtp_sink: SmtpSink, clinic, make_api_key
):
    headers = make_api_key(clinic)
    list_id, _ = _audience(delivering, clinic, 3)
    template_id = _template(delivering, clinic)
    created = client.post(f"{V1}/campaigns", json=_body(list_id, template_id), headers=headers)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert created.json()["template_id"] == template_id and created.json()["ab_test"] is None
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(delivering)
    deliver_due_messages(delivering, budget_seconds=30)
    advance_campaigns(delivering)
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    assert shown["state"] == "done" and shown["counts"] == {"delivered": 3}
    received = [r for r in smtp_sink.received if "Flu shots at the clinic" in r.message["Subject"]]
    assert len(received) == 3
    body = received[0].message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "100 Main Street" in body and "/u/" in body
    assert {m.template_id for m in _messages(delivering, clinic, campaign_id)} == {
        uuid.UUID(template_id)
    }


def test_template_checks_name_the_field(client, runtime, clinic, make_tenant, make_api_key):
    headers = make_api_key(clinic)
    list_id, _ = _audience(runtime, clinic, 1)
    marketing = _template(runtime, clinic)
    transactional = _template(runtime, clinic, kind="transactional", html="<p>Your visit</p>")
    other = make_tenant()
    with runtime.bound_session(other[1]) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=other[0].id, actor=SYSTEM, physical_address=ADDRESS
        )
    foreign = _template(runtime, other)
    cases = [
        (_body(list_id, foreign), "#/body/template_id"),
        (_body(list_id, str(uuid.uuid4())), "#/body/template_id"),
        # A transactional template has no CAN-SPAM footer: not for marketing.
        (_body(list_id, transactional), "#/body/template_id"),
        # A marketing template sent as transactional would skip consent.
        (_body(list_id, marketing, purpose="transactional"), "#/body/purpose"),
        (_body(list_id, marketing, subject="Raw too"), "#/body/template_id"),
    ]
    for body, pointer in cases:
        response = client.post(f"{V1}/campaigns", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["pointer"] == pointer
    # The organization's address changed since the template was saved: CAN-SPAM again.
    with runtime.bound_session(clinic[1]) as session:
        row = session.get(Template, uuid.UUID(marketing))
        assert row is not None
        row.html = "<p>Flu shots.</p><p>1 Old Road, Nowhere</p>" + (
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        )
    refused = client.post(f"{V1}/campaigns", json=_body(list_id, marketing), headers=headers)
    assert refused.status_code == 422
    assert "postal address" in refused.json()["detail"] or "address" in refused.json()["detail"]
    # Transactional purpose with a transactional template (PHI may go: treatment).
    ok = client.post(
        f"{V1}/campaigns",
        json=_body(list_id, transactional, purpose="transactional"),
        headers=headers,
    )
    assert ok.status_code == 201, ok.text


def test_a_phi_template_goes_for_marketing_only_with_the_authorization(
    client, runtime, clinic, make_api_key, empty_queue
):
    headers = make_api_key(clinic)
    list_id, members = _audience(runtime, clinic, 2)
    with runtime.bound_session(clinic[1]) as session:
        consent.record_consents(
            session,
            clinic[0].id,
            contact_id=members[0],
            changes=[ConsentChange("email", "marketing_phi", "granted", "api")],
            actor=SYSTEM,
        )
    template_id = _template(runtime, clinic, html=f"<p>Hi {{{{ contact.first_name }}}}</p>{FOOTER}")
    created = client.post(f"{V1}/campaigns", json=_body(list_id, template_id), headers=headers)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(runtime)
    by_contact = {m.contact_id: m for m in _messages(runtime, clinic, campaign_id)}
    assert by_contact[members[0]].state == "queued"
    assert by_contact[members[1]].state == "suppressed"
    assert "phi_authorization_missing" in by_contact[members[1]].state_reason


def _hit(client, path: str) -> None:
    response = client.get(path, headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert response.status_code in (200, 302), response.text


@pytest.mark.parametrize("metric", ["opens", "clicks"])
def test_an_ab_test_sends_the_split_then_the_winner_to_the_rest(
    metric, client, delivering, smtp_sink: SmtpSink, clinic, make_api_key, audit_trail
):
    headers = make_api_key(clinic)
    list_id, members = _audience(delivering, clinic, 40)
    link = '<p><a href="https://clinic.example/book">Book</a></p>'
    template_id = _template(
        delivering,
        clinic,
        html=f"<p>Flu shots are in.</p>{link}{FOOTER}",
        variants=[
            {"key": "a", "subject": "Subject A", "percent": 25},
            {"key": "b", "subject": "Subject B", "from_name": "Dr. Bee", "percent": 25},
        ],
    )
    created = client.post(
        f"{V1}/campaigns",
        json=_body(list_id, template_id, ab_metric=metric, ab_window_hours=2),
        headers=headers,
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert created.json()["ab_test"]["metric"] == metric
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(delivering)

    # The test portion: each contact's arm by assign_variant; the holdout waits.
    splits = [VariantSplit("a", 25), VariantSplit("b", 25)]
    expected = {
        c: arm.key
        for c in members
        if (arm := assign_variant(f"{campaign_id}:{c}", splits)) is not None
    }
    tested = _messages(delivering, clinic, campaign_id)
    assert {m.contact_id: m.variant for m in tested} == expected
    assert {m.from_name for m in tested if m.variant == "b"} == {"Dr. Bee"}
    assert {m.from_name for m in tested if m.variant == "a"} == {"The Clinic"}
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    assert shown["state"] == "sending" and shown["ab_test"]["phase"] == "waiting"
    deliver_due_messages(delivering, budget_seconds=30)
    subjects = sorted({r.message["Subject"] for r in smtp_sink.received})
    assert subjects == ["Subject A", "Subject B"]

    # Real tracking hits: people open/click arm b more; a scanner's hits on a do not count.
    secret = cached_feedback_secret(delivering.settings)
    with delivering.bound_session(clinic[1]) as session:
        # Sent a while ago, so a click is not "too fast" for a person.
        session.execute(
            update(Message)
            .where(Message.campaign_id == uuid.UUID(campaign_id))
            .values(sent_at=utcnow() - timedelta(minutes=10))
        )
    arm_a = [m.id for m in tested if m.variant == "a"]
    arm_b = [m.id for m in tested if m.variant == "b"]
    assert arm_a and arm_b
    for message_id in arm_b[: max(1, len(arm_b) // 2 + 1)]:
        if metric == "opens":
            _hit(client, f"/t/o/{open_token(message_id, secret=secret)}.gif")
        else:
            url = "https://clinic.example/book"
            _hit(client, f"/t/c/{click_token(message_id, 0, url, secret=secret)}")
    for message_id in arm_a:
        token = open_token(message_id, secret=secret)
        client.get(f"/t/o/{token}.gif", headers={"User-Agent": "Mozilla/5.0"})  # Apple proxy
        url = "https://clinic.example/book"
        client.get(
            f"/t/c/{click_token(message_id, 0, url, secret=secret)}",
            headers={"User-Agent": "Barracuda link scanner"},
            follow_redirects=False,
        )

    # Still in the window: nothing more happens.
    advance_campaigns(delivering)
    assert len(_messages(delivering, clinic, campaign_id)) == len(expected)
    with delivering.bound_session(clinic[1]) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == uuid.UUID(campaign_id))
            .values(ab_test_until=utcnow() - timedelta(seconds=1))
        )
    advance_campaigns(delivering)
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    ab = shown["ab_test"]
    assert ab["winner"] == "b" and ab["phase"] == "decided" and ab["decided_at"]
    results = {r["key"]: r for r in ab["results"]}
    assert results["a"]["delivered"] == len(arm_a) and results["a"]["opens"] == 0
    assert results["b"]["delivered"] == len(arm_b)
    assert results["b"][metric] == len(arm_b) // 2 + 1
    everyone = _messages(delivering, clinic, campaign_id)
    assert len(everyone) == len(members)
    holdout = [m for m in everyone if m.contact_id not in expected]
    assert holdout and {m.variant for m in holdout} == {"b"}
    deliver_due_messages(delivering, budget_seconds=30)
    advance_campaigns(delivering)
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    assert shown["state"] == "done" and shown["counts"] == {"delivered": len(members)}
    [decision] = audit_trail(clinic, "campaign.ab_winner")
    assert decision.details["variant"] == "b" and decision.details["metric"] == metric
    with delivering.bound_session(clinic[1]) as session:
        template = session.get(Template, uuid.UUID(template_id))
        assert template is not None and template.ab_winner == "b"


def test_ab_test_off_sends_the_template_to_everyone(client, runtime, clinic, make_api_key):
    headers = make_api_key(clinic)
    list_id, _ = _audience(runtime, clinic, 6)
    template_id = _template(
        runtime, clinic, variants=[{"key": "a", "subject": "Subject A", "percent": 50}]
    )
    created = client.post(
        f"{V1}/campaigns", json=_body(list_id, template_id, ab_test=False), headers=headers
    )
    assert created.json()["ab_test"] is None
    campaign_id = created.json()["id"]
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(runtime)
    found = _messages(runtime, clinic, campaign_id)
    assert len(found) == 6 and {m.variant for m in found} == {None}


def test_a_draft_can_switch_to_a_template_and_back(client, runtime, clinic, make_api_key):
    headers = make_api_key(clinic)
    list_id, _ = _audience(runtime, clinic, 1)
    marketing = _template(
        runtime, clinic, variants=[{"key": "a", "subject": "Subject A", "percent": 50}]
    )
    transactional = _template(runtime, clinic, kind="transactional", html="<p>Your visit</p>")
    raw = {
        "name": "Raw",
        "list_id": str(list_id),
        "from": "news@clinic.example",
        "subject": "Hello",
        "text": "Hi",
    }
    campaign_id = client.post(f"{V1}/campaigns", json=raw, headers=headers).json()["id"]
    switched = client.patch(
        f"{V1}/campaigns/{campaign_id}", json={"template_id": marketing}, headers=headers
    )
    assert switched.status_code == 200, switched.text
    assert switched.json()["template_id"] == marketing
    assert switched.json()["ab_test"]["metric"] == "opens"  # the template's default
    refused = client.patch(
        f"{V1}/campaigns/{campaign_id}", json={"template_id": transactional}, headers=headers
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "#/body/template_id"
    back = client.patch(
        f"{V1}/campaigns/{campaign_id}",
        json={"template_id": None, "subject": "Hello again", "text": "Hi"},
        headers=headers,
    )
    assert back.status_code == 200, back.text
    assert back.json()["template_id"] is None and back.json()["ab_test"] is None
