"""Campaigns: audience frozen at send, personalized, consent-checked, throttled, paused,
resumed and cancelled; through the service and the API."""

from __future__ import annotations

import itertools
import math
import uuid
from datetime import timedelta

from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.service import ConsentChange
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.core.database import utcnow
from carepost.messages.campaigns import advance_campaigns
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from carepost.segments import service as segments

V1 = "/api/v1"


def _people(runtime, tenant, count: int, *, consent_to_marketing: bool = True) -> list[uuid.UUID]:
    tenant_row, keys = tenant
    ids = []
    with runtime.bound_session(keys) as session:
        for n in range(count):
            contact = contacts.create_contact(
                session,
                keys,
                values={"email": f"c{n}-{uuid.uuid4().hex[:6]}@example.org", "first_name": f"N{n}"},
                actor=SYSTEM,
            )
            ids.append(contact.id)
            if consent_to_marketing:
                # Personalized marketing uses PHI (the name): it needs the authorization too.
                consent.record_consents(
                    session,
                    tenant_row.id,
                    contact_id=contact.id,
                    changes=[
                        ConsentChange("email", purpose, "granted", "api")
                        for purpose in ("marketing", "marketing_phi")
                    ],
                    actor=SYSTEM,
                )
    return ids


def _list_of(runtime, tenant, contact_ids) -> uuid.UUID:
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        row = lists.create_list(
            session, tenant_row.id, name=f"l-{uuid.uuid4().hex[:6]}", description="", actor=SYSTEM
        )
        lists.change_members(
            session, tenant_row.id, row.id, add=contact_ids, remove=[], actor=SYSTEM
        )
        return row.id


def _campaign_body(**extra):
    return {
        "name": "Flu shots",
        "from": "news@clinic.example",
        "from_name": "The Clinic",
        "subject": "Flu shots are here, {{ contact.first_name }}",
        "html": "<p>Book now. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
    } | extra


def _messages(runtime, tenant, campaign_id) -> list[Message]:
    with runtime.bound_session(tenant[1]) as session:
        found = list(
            session.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign_id)))
        )
        for message in found:
            _ = (message.subject, message.body)
        return found


def test_a_campaign_to_a_list_is_frozen_personalized_and_consent_checked(
    client, runtime, tenant, make_api_key, empty_queue
):
    headers = make_api_key(tenant)
    members = _people(runtime, tenant, 4)
    [unconsented] = _people(runtime, tenant, 1, consent_to_marketing=False)
    with runtime.bound_session(tenant[1]) as session:
        no_email = contacts.create_contact(
            session, tenant[1], values={"external_id": f"x-{uuid.uuid4().hex}"}, actor=SYSTEM
        ).id
        bounced = contacts.get_contact(session, tenant[0].id, members[3], with_phi=True).email
        suppressions.add_suppression(
            session, tenant[1], address=bounced, reason="hard_bounce", source="api", actor=SYSTEM
        )
    list_id = _list_of(runtime, tenant, [*members, unconsented, no_email])
    created = client.post(
        f"{V1}/campaigns", json=_campaign_body(list_id=str(list_id)), headers=headers
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert created.json()["state"] == "draft"
    scheduled = client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    assert scheduled.json()["state"] == "scheduled"
    advance_campaigns(runtime)
    # Joining after the start is too late: the audience was frozen.
    [late] = _people(runtime, tenant, 1)
    with runtime.bound_session(tenant[1]) as session:
        lists.change_members(session, tenant[0].id, list_id, add=[late], remove=[], actor=SYSTEM)
    advance_campaigns(runtime)
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    assert (shown["audience"], shown["queued"], shown["suppressed"], shown["skipped"]) == (
        6,
        3,
        2,
        1,
    )
    assert shown["counts"] == {"queued": 3, "suppressed": 2}
    messages = _messages(runtime, tenant, campaign_id)
    assert {m.contact_id for m in messages} == {*members, unconsented}
    queued = [m for m in messages if m.state == "queued"]
    assert all(m.priority == 2 and m.purpose == "marketing" for m in queued)
    assert sorted(m.subject for m in queued) == [f"Flu shots are here, N{n}" for n in range(3)]
    assert all("https://testserver/u/" in m.body["html"] for m in queued)
    reasons = sorted(m.state_reason for m in messages if m.state == "suppressed")
    assert reasons == [
        "consent_missing:marketing,phi_authorization_missing",
        "suppressed:hard_bounce",
    ]
    # Once every message has gone, the campaign is done.
    with runtime.database.session() as session:
        session.execute(
            Message.__table__.update()
            .where(Message.campaign_id == uuid.UUID(campaign_id), Message.state == "queued")
            .values(state="delivered")
        )
    advance_campaigns(runtime)
    assert client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()["state"] == "done"


def test_a_segment_campaign_snapshots_the_segment(
    client, runtime, tenant, make_api_key, empty_queue
):
    headers = make_api_key(tenant)
    members = _people(runtime, tenant, 3)
    list_id = _list_of(runtime, tenant, members)
    with runtime.bound_session(tenant[1]) as session:
        segment = segments.create_segment(
            session,
            tenant[0].id,
            name="s",
            description="",
            rule={"list": str(list_id)},
            actor=SYSTEM,
        )
    body = _campaign_body(segment_id=str(segment.id), purpose="marketing")
    campaign_id = client.post(f"{V1}/campaigns", json=body, headers=headers).json()["id"]
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(runtime)
    shown = client.get(f"{V1}/campaigns/{campaign_id}", headers=headers).json()
    assert shown["snapshot_id"] and shown["audience"] == 3 and shown["queued"] == 3


def test_a_throttled_campaign_is_spaced_and_queued_a_minute_ahead(
    client, runtime, tenant, make_api_key, empty_queue
):
    headers = make_api_key(tenant)
    list_id = _list_of(runtime, tenant, _people(runtime, tenant, 150))
    body = _campaign_body(list_id=str(list_id), throttle_per_hour=3600)
    campaign_id = client.post(f"{V1}/campaigns", json=body, headers=headers).json()["id"]
    scheduled = utcnow()
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(runtime)
    first_run = utcnow()
    messages = sorted(_messages(runtime, tenant, campaign_id), key=lambda m: m.next_attempt_at)
    # One a second, one minute ahead of now; a slow machine's seconds between the
    # schedule and the run are due too.
    late = math.ceil((utcnow() - scheduled).total_seconds())
    assert 60 <= len(messages) <= 62 + late
    gaps = {
        round((b.next_attempt_at - a.next_attempt_at).total_seconds(), 3)
        for a, b in itertools.pairwise(messages)
    }
    assert gaps == {1.0}
    assert messages[-1].next_attempt_at <= utcnow() + timedelta(seconds=65)
    advance_campaigns(runtime)  # nothing more until time passes (a second a message)
    more = len(_messages(runtime, tenant, campaign_id)) - len(messages)
    assert more <= math.ceil((utcnow() - first_run).total_seconds()) - 1 or more == 0


def test_pause_holds_resume_releases_cancel_stops(
    client, runtime, tenant, make_api_key, empty_queue
):
    headers = make_api_key(tenant)
    list_id = _list_of(runtime, tenant, _people(runtime, tenant, 4))
    campaign_id = client.post(
        f"{V1}/campaigns", json=_campaign_body(list_id=str(list_id)), headers=headers
    ).json()["id"]
    assert client.post(f"{V1}/campaigns/{campaign_id}/pause", headers=headers).status_code == 409
    client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    advance_campaigns(runtime)
    paused = client.post(f"{V1}/campaigns/{campaign_id}/pause", headers=headers).json()
    assert paused["state"] == "paused" and paused["counts"] == {"held": 4}
    run = deliver_due_messages(runtime, budget_seconds=5)
    assert run.claimed == 0  # held messages are not due
    resumed = client.post(f"{V1}/campaigns/{campaign_id}/resume", headers=headers).json()
    assert resumed["state"] == "sending" and resumed["counts"] == {"queued": 4}
    cancelled = client.post(f"{V1}/campaigns/{campaign_id}/cancel", headers=headers).json()
    assert cancelled["state"] == "cancelled" and cancelled["counts"] == {"cancelled": 4}
    again = client.post(f"{V1}/campaigns/{campaign_id}/cancel", headers=headers)
    assert again.status_code == 409


def test_campaign_input_errors_name_the_field(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant)
    list_id = str(_list_of(runtime, tenant, []))
    cases = [
        (_campaign_body(), "#/body/list_id"),
        (_campaign_body(list_id=list_id, segment_id=str(uuid.uuid4())), "#/body/list_id"),
        (_campaign_body(list_id=list_id, html="<p>{% if %}</p>"), "#/body/html"),
        (_campaign_body(list_id=list_id, template_id=str(uuid.uuid4())), "#/body/template_id"),
        (_campaign_body(list_id=list_id, **{"from": "nope"}), "#/body/from"),
    ]
    for body, pointer in cases:
        response = client.post(f"{V1}/campaigns", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["pointer"] == pointer
    unknown_list = client.post(
        f"{V1}/campaigns", json=_campaign_body(list_id=str(uuid.uuid4())), headers=headers
    )
    assert unknown_list.status_code == 404


def test_a_campaign_name_cannot_be_cleared(client, runtime, tenant, make_api_key):
    """The API fuzzer sent ``{"name": null}`` and reached a database error: a 422 on the
    field instead, and the campaign keeps its name."""
    headers = make_api_key(tenant)
    list_id = str(_list_of(runtime, tenant, []))
    created = client.post(f"{V1}/campaigns", json=_campaign_body(list_id=list_id), headers=headers)
    assert created.status_code == 201, created.text
    campaign = created.json()
    response = client.patch(
        f"{V1}/campaigns/{campaign['id']}", json={"name": None}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/name"
    again = client.get(f"{V1}/campaigns/{campaign['id']}", headers=headers).json()
    assert again["name"] == campaign["name"]
