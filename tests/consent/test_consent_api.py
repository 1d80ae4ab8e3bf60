"""Consent over the API: recording appends, the history is kept, the current state is
the latest capture, evidence is PHI (encrypted, shown only with phi:read, audited),
topics are tenant purposes, and bad input gets a clear problem naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from carepost.consent import service as consent
from carepost.consent.models import ConsentCurrent, ConsentRecord
from tests.canaries import phi_value

V1 = "/api/v1"


def consents_url(clinic) -> str:
    return f"{V1}/contacts/{clinic.contact_id}/consents"


def record(client, clinic, **body):
    payload = {"channel": "email", "purpose": "marketing", "status": "granted"} | body
    return client.post(consents_url(clinic), json=payload, headers=clinic.headers)


def test_recording_a_consent_returns_it(client, clinic, audit_trail):
    evidence = phi_value("evidence")
    response = record(client, clinic, source="paper", evidence=evidence)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "granted" and body["source"] == "paper"
    assert body["evidence"] == evidence and body["recorded_by_type"] == "api_key"
    events = audit_trail(clinic.tenant, "consent.record")
    assert events[-1].details["evidence"] is True
    assert evidence not in str(events[-1].details)


def test_history_is_kept_and_current_is_the_latest(client, clinic):
    assert record(client, clinic, status="granted").status_code == 201
    assert record(client, clinic, status="revoked").status_code == 201
    assert record(client, clinic, channel="sms", purpose="transactional").status_code == 201
    shown = client.get(consents_url(clinic), headers=clinic.headers).json()
    assert [r["status"] for r in shown["history"] if r["channel"] == "email"] == [
        "revoked",
        "granted",
    ]
    current = {(c["channel"], c["purpose"]): c["status"] for c in shown["current"]}
    assert current == {("email", "marketing"): "revoked", ("sms", "transactional"): "granted"}


def test_a_backdated_record_joins_the_history_without_overriding_a_later_one(client, clinic):
    record(client, clinic, status="revoked")
    last_month = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    response = record(client, clinic, status="granted", source="paper", captured_at=last_month)
    assert response.status_code == 201
    shown = client.get(consents_url(clinic), headers=clinic.headers).json()
    assert [c["status"] for c in shown["current"]] == ["revoked"]
    assert [r["status"] for r in shown["history"]] == ["revoked", "granted"]


def test_current_consent_is_one_row_per_channel_and_purpose(runtime, clinic):
    with runtime.bound_session(clinic.keys) as session:
        for status in ("pending", "granted", "revoked", "granted"):
            consent.record_consent(
                session,
                clinic.tenant_id,
                contact_id=clinic.contact_id,
                change=consent.ConsentChange("email", "research", status, "web_form"),
                actor=consent.audit.SYSTEM,
            )
        rows = session.scalars(
            select(ConsentCurrent).where(ConsentCurrent.contact_id == clinic.contact_id)
        ).all()
        assert [(r.purpose, r.status) for r in rows] == [("research", "granted")]
        history = consent.consent_history(session, clinic.tenant_id, clinic.contact_id)
        assert len(history) == 4
        assert rows[0].record_id == history[0].id


def test_evidence_is_encrypted_at_rest(runtime, client, clinic):
    evidence = phi_value("evidence")
    record(client, clinic, evidence=evidence)
    with runtime.database.engine.connect() as connection:
        raw = (
            connection.execute(
                text("SELECT evidence FROM consent_records WHERE contact_id = :c"),
                {"c": clinic.contact_id.hex if runtime.database.is_sqlite else clinic.contact_id},
            )
            .scalars()
            .all()
        )
    assert raw and all(evidence.encode() not in bytes(value) for value in raw)


def test_evidence_needs_phi_read_and_its_view_is_audited(client, clinic, make_api_key, audit_trail):
    evidence = phi_value("evidence")
    record(client, clinic, evidence=evidence)
    analyst = make_api_key(clinic.tenant, ["consent:read", "contacts:read"])
    hidden = client.get(consents_url(clinic), headers=analyst)
    assert hidden.status_code == 200 and evidence not in hidden.text
    assert hidden.json()["history"][0]["evidence_redacted"] is True
    assert audit_trail(clinic.tenant, "contact.view_phi") == []
    shown = client.get(consents_url(clinic), headers=clinic.headers)
    assert shown.json()["history"][0]["evidence"] == evidence
    viewed = audit_trail(clinic.tenant, "contact.view_phi")
    assert [e.details["via"] for e in viewed] == ["consents"]


def test_a_topic_is_a_purpose_of_the_tenant(client, clinic):
    assert record(client, clinic, purpose="flu-shots").status_code == 422
    created = client.post(
        f"{V1}/topics",
        json={"key": "flu-shots", "name": "Flu shot reminders", "channels": ["email"]},
        headers=clinic.headers,
    )
    assert created.status_code == 201 and created.json()["channels"] == ["email"]
    assert record(client, clinic, purpose="flu-shots").status_code == 201
    listed = client.get(f"{V1}/topics", headers=clinic.headers).json()
    assert [t["key"] for t in listed["items"]] == ["flu-shots"]
    again = client.post(
        f"{V1}/topics", json={"key": "flu-shots", "name": "Again"}, headers=clinic.headers
    )
    assert again.status_code == 409 and again.json()["errors"][0]["pointer"] == "#/body/key"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"key": "marketing", "name": "x"}, "#/body/key"),
        ({"key": "Bad Key", "name": "x"}, "#/body/key"),
        ({"key": "ok-key", "name": "x", "channels": []}, "#/body/channels"),
        ({"key": "ok-key", "name": "x", "channels": ["fax"]}, "#/body/channels/0"),
        ({"key": "ok-key", "name": "a\x00b"}, "#/body/name"),
        ({"key": "ok-key", "name": "x", "extra": 1}, "#/body/extra"),
    ],
)
def test_bad_topics_are_refused(client, clinic, body, pointer):
    response = client.post(f"{V1}/topics", json=body, headers=clinic.headers)
    assert response.status_code == 422
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


def _future(days: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"channel": "fax"}, "#/body/channel"),
        ({"status": "maybe"}, "#/body/status"),
        ({"source": "rumour"}, "#/body/source"),
        ({"purpose": "no-such-topic"}, "#/body/purpose"),
        ({"purpose": ""}, "#/body/purpose"),
        ({"captured_at": _future()}, "#/body/captured_at"),
        ({"captured_at": "2026-01-01T00:00:00"}, "#/body/captured_at"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "#/body/expires_at"),
        ({"evidence": "x" * 2001}, "#/body/evidence"),
        ({"evidence": "nul\x00"}, "#/body/evidence"),
        ({"unknown": True}, "#/body/unknown"),
    ],
)
def test_bad_consents_are_refused_and_nothing_is_written(runtime, client, clinic, change, pointer):
    response = record(client, clinic, **change)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [e["pointer"] for e in response.json()["errors"]]
    with runtime.bound_session(clinic.keys) as session:
        written = session.scalars(
            select(ConsentRecord.id).where(ConsentRecord.contact_id == clinic.contact_id)
        ).all()
        assert written == []


def test_evidence_never_comes_back_in_an_error(client, clinic):
    evidence = phi_value("evidence")
    response = record(client, clinic, evidence=evidence, channel="fax")
    assert response.status_code == 422 and evidence not in response.text


def test_an_unknown_contact_is_not_found(client, clinic):
    url = f"{V1}/contacts/00000000-0000-7000-8000-000000000000/consents"
    assert client.get(url, headers=clinic.headers).status_code == 404
    body = {"channel": "email", "purpose": "marketing", "status": "granted"}
    assert client.post(url, json=body, headers=clinic.headers).status_code == 404
    assert (
        client.get(f"{V1}/contacts/not-an-id/consents", headers=clinic.headers).status_code == 422
    )


def test_deleting_a_contact_deletes_its_consents(runtime, client, clinic):
    record(client, clinic)
    assert (
        client.delete(f"{V1}/contacts/{clinic.contact_id}", headers=clinic.headers).status_code
        == 204
    )
    with runtime.bound_session(clinic.keys) as session:
        left = session.scalars(
            select(ConsentRecord).where(ConsentRecord.contact_id == clinic.contact_id)
        ).all()
        assert left == []
