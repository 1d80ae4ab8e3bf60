"""The workflows REST API: problem+json pointing at the step at fault, activation,
enrollment, counts, runs, removal, simulation, permissions and tenant isolation."""

from __future__ import annotations

import uuid
from datetime import timedelta

from carepost.workflows import engine
from tests.workflows.conftest import T0

V1 = "/api/v1/workflows"


def _body(journey, steps, **extra):
    return {
        "name": f"wf-{uuid.uuid4().hex[:8]}",
        "sender_address": "care@clinic.example",
        "draft": {"steps": steps},
    } | extra


def _email(journey, step_id="hello", next_step=None):
    step = {"id": step_id, "type": "send_email", "template_id": str(journey.template_id)}
    return step | ({"next": next_step} if next_step else {})


def test_activation_refuses_a_broken_graph_naming_each_step(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    steps = [
        _email(journey, "hello", "choose"),
        {
            "id": "choose",
            "type": "branch",
            "conditions": [{"rule": {"field": "language", "op": "is_set"}, "next": "nowhere"}],
        },
        {"id": "orphan", "type": "exit"},
        {
            "id": "window",
            "type": "wait_until",
            "until": {"kind": "window", "start": "14:00", "end": "12:00"},
        },
        {"id": "mail", "type": "send_email", "template_id": str(uuid.uuid4())},
    ]
    created = client.post(V1, json=_body(journey, steps), headers=headers)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    refused = client.post(f"{V1}/{workflow_id}/activate", headers=headers)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    problems = {e["pointer"]: e["detail"] for e in refused.json()["errors"]}
    assert "step choose" in problems["#/body/draft/steps/1/conditions/0/next"]
    assert "fallback" in problems["#/body/draft/steps/1/fallback"]
    assert "no path" in problems["#/body/draft/steps/2"]
    assert "never end" in problems["#/body/draft/steps/3/until"]
    assert "no such template" in problems["#/body/draft/steps/4/template_id"]
    assert client.get(f"{V1}/{workflow_id}", headers=headers).json()["status"] == "draft"


def test_a_malformed_step_is_a_422_pointing_into_the_draft(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    steps = [
        {"id": "w", "type": "wait_until", "until": {"kind": "window", "timezone": "Mars/Olympus"}}
    ]
    response = client.post(V1, json=_body(journey, steps), headers=headers)
    assert response.status_code == 422
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert pointers == ["#/body/draft/steps/0/until/timezone"]
    unknown = client.post(
        V1, json=_body(journey, [{"id": "x", "type": "teleport"}]), headers=headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"].startswith("#/body/draft/steps/0")


def test_enroll_by_api_then_advance_and_read_counts_and_history(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    steps = [
        _email(journey, "hello", "pause"),
        {"id": "pause", "type": "wait_duration", "duration": {"days": 1}, "next": "end"},
        {"id": "end", "type": "exit"},
    ]
    workflow_id = client.post(V1, json=_body(journey, steps), headers=headers).json()["id"]
    assert client.post(f"{V1}/{workflow_id}/activate", headers=headers).status_code == 200
    people = [journey.contact() for _ in range(3)]
    stranger = str(uuid.uuid4())
    refused = client.post(
        f"{V1}/{workflow_id}/enroll",
        json={"contact_ids": [str(people[0]), stranger]},
        headers=headers,
    )
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"pointer": "#/body/contact_ids/1", "detail": "no such contact"}
    ]
    enrolled = client.post(
        f"{V1}/{workflow_id}/enroll",
        json={"contact_ids": [str(p) for p in people]},
        headers=headers,
    )
    assert enrolled.json() == {"enrolled": 3, "skipped": 0}
    engine.advance_due_runs(
        journey.runtime, now=T0 + timedelta(days=400), tenant_id=journey.tenant_id
    )
    counts = client.get(f"{V1}/{workflow_id}/counts", headers=headers).json()
    assert counts["current"] == {"pause": 3}
    assert counts["processed"] == {"hello": 3}
    removed = client.delete(f"{V1}/{workflow_id}/runs/{people[0]}", headers=headers)
    assert removed.json()["status"] == "exited"
    again = client.post(
        f"{V1}/{workflow_id}/enroll", json={"contact_ids": [str(people[0])]}, headers=headers
    )
    assert again.json() == {"enrolled": 0, "skipped": 1}
    history = client.get(f"{V1}/{workflow_id}/runs/{people[1]}/history", headers=headers).json()
    assert [(h["step_id"], h["outcome"]) for h in history] == [("hello", "sent"), ("pause", "")]
    runs = client.get(f"{V1}/{workflow_id}/runs?status=waiting", headers=headers).json()
    assert len(runs["items"]) == 2


def test_simulate_shows_the_path_and_times_without_sending(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    steps = [
        _email(journey, "hello", "pause"),
        {"id": "pause", "type": "wait_duration", "duration": {"hours": 5}, "next": "opened"},
        {
            "id": "opened",
            "type": "wait_for_event",
            "event": {"kind": "opened"},
            "timeout": {"days": 3},
            "next": "thanks",
            "timeout_next": "nudge",
        },
        {"id": "thanks", "type": "exit"},
        _email(journey, "nudge"),
    ]
    workflow_id = client.post(V1, json=_body(journey, steps), headers=headers).json()["id"]
    person = journey.contact()
    simulated = client.post(
        f"{V1}/{workflow_id}/simulate",
        json={"contact_id": str(person), "start_at": T0.isoformat()},
        headers=headers,
    )
    assert simulated.status_code == 200, simulated.text
    path = simulated.json()["path"]
    assert [(p["step_id"], p["outcome"]) for p in path] == [
        ("hello", "would_send"),
        ("pause", "waited"),
        ("opened", "timeout"),
        ("nudge", "would_send"),
    ]
    assert path[1]["at"].startswith("2026-03-02T20:00")
    with_open = client.post(
        f"{V1}/{workflow_id}/simulate",
        json={"contact_id": str(person), "events": ["email.opened"]},
        headers=headers,
    ).json()
    assert [p["step_id"] for p in with_open["path"]][-1] == "thanks"
    assert journey.emails() == 0


def test_another_tenants_workflow_is_not_found_and_its_contacts_cannot_be_enrolled(
    make_journey, client, make_api_key
):
    ours, theirs = make_journey(), make_journey()
    their_workflow = theirs.workflow([{"id": "end", "type": "exit"}])
    our_headers = make_api_key(ours.tenant)
    assert client.get(f"{V1}/{their_workflow}", headers=our_headers).status_code == 404
    refused = client.post(
        f"{V1}/{their_workflow}/enroll",
        json={"contact_ids": [str(ours.contact())]},
        headers=our_headers,
    )
    assert refused.status_code == 404
    our_workflow = ours.workflow([{"id": "end", "type": "exit"}])
    their_person = theirs.contact()
    refused = client.post(
        f"{V1}/{our_workflow}/enroll",
        json={"contact_ids": [str(their_person)]},
        headers=our_headers,
    )
    assert refused.status_code == 422
    # A template of another tenant is "no such template" to ours.
    borrowed = ours.workflow(
        [{"id": "x", "type": "send_email", "template_id": str(theirs.template_id)}], activate=False
    )
    refused = client.post(f"{V1}/{borrowed}/activate", headers=our_headers)
    assert refused.json()["errors"][0]["pointer"] == "#/body/draft/steps/0/template_id"


def test_reading_needs_workflows_read_and_changing_workflows_write(journey, client, make_api_key):
    reader = make_api_key(journey.tenant, ["workflows:read"])
    workflow_id = journey.workflow([{"id": "end", "type": "exit"}])
    assert client.get(f"{V1}/{workflow_id}", headers=reader).status_code == 200
    assert client.post(f"{V1}/{workflow_id}/pause", headers=reader).status_code == 403
    refused = client.post(
        f"{V1}/{workflow_id}/enroll", json={"contact_ids": [str(journey.contact())]}, headers=reader
    )
    assert refused.status_code == 403
