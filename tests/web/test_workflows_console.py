"""The workflow console: the list and a new workflow, the builder (adding, editing,
moving and deleting steps, validation next to the step at fault), activation,
enrollment, counts on the diagram, publishing a new version after its review of the
contacts in flight, the version history, the dry run (masked without phi:read,
audited when revealed), the runs pages, roles and HTMX partials."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta
from typing import Any

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.service import ConsentChange
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.core.database import utcnow
from carepost.segments import service as segments
from carepost.templates import service as templates
from carepost.workflows import engine
from carepost.workflows.models import Workflow
from tests.web.workflow_objects import make_workflow

GRAPH = re.compile(r'name="graph" value="([^"]*)"')


def graph_of(response) -> dict[str, Any]:
    match = GRAPH.search(response.text)
    assert match, response.text[:2000]
    return json.loads(html.unescape(match.group(1)))


def _world(runtime, tenant, members: int = 2) -> dict[str, Any]:
    """A template, a list of consenting contacts."""
    with runtime.bound_session(tenant[1]) as session:
        template = templates.create_template(
            session,
            tenant[0].id,
            name="Welcome",
            kind="transactional",
            subject="Welcome",
            html="<p>Hello. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
            text=None,
            actor=SYSTEM,
        )
        ids = []
        for n in range(members):
            row = contacts.create_contact(
                session,
                tenant[1],
                values={"email": f"p{n}-{uuid.uuid4().hex[:6]}@example.org", "first_name": "Ann"},
                actor=SYSTEM,
            )
            consent.record_consents(
                session,
                tenant[0].id,
                contact_id=row.id,
                changes=[ConsentChange("email", "marketing", "granted", "api")],
                actor=SYSTEM,
            )
            ids.append(row.id)
        group = lists.create_list(
            session, tenant[0].id, name="New patients", description="", actor=SYSTEM
        )
        lists.change_members(session, tenant[0].id, group.id, add=ids, remove=[], actor=SYSTEM)
        return {"template_id": template.id, "list_id": group.id, "contacts": ids}


def _create(b, name: str = "Welcome series") -> str:
    response = b.post(
        "/workflows",
        {
            "name": name,
            "sender_name": "The Clinic",
            "sender_address": "care@clinic.example",
            "priority": "normal",
        },
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith("?done=created")
    return response.headers["location"].split("?")[0]


def _act(b, base: str, graph: dict[str, Any], action: str, **fields: str):
    data = {"graph": json.dumps(graph), "action": action, **fields}
    response = b.post(f"{base}/builder", data, htmx=True)
    assert response.status_code == 200, response.text
    assert "<html" not in response.text  # a partial
    return response


def _act_raw(b, base: str, graph: dict[str, Any], action: str):
    return b.post(f"{base}/builder", {"graph": json.dumps(graph), "action": action}, htmx=True)


def _draft(runtime, base: str) -> dict[str, Any]:
    with runtime.database.session() as session:
        return session.get(Workflow, uuid.UUID(base.rsplit("/", 1)[1])).draft


def test_create_a_workflow_with_errors_at_their_fields(owner, sign_in, tenant):
    b = sign_in(owner)
    assert "Workflows" in b.get("/").text  # in the navigation
    form = b.get("/workflows/new")
    assert form.status_code == 200 and 'name="sender_address"' in form.text
    bad = b.post("/workflows", {"name": "", "sender_address": "not an address"})
    assert bad.status_code == 422
    assert "Enter the workflow name" in bad.text
    base = _create(b)
    created = b.get(f"{base}?done=created")
    assert "The workflow is created as a draft" in created.text
    listing = b.get("/workflows")
    assert "Welcome series" in listing.text and "draft" in listing.text
    again = b.post("/workflows", {"name": "Welcome series", "sender_address": "a@clinic.example"})
    assert again.status_code == 409 and "A workflow with this name exists" in again.text
    page = b.get(base)
    assert page.status_code == 200
    assert 'id="step-end-1"' in page.text and "+ Add step" in page.text


def test_build_send_wait_event_branch_stage_by_steps(owner, sign_in, runtime, tenant):
    world = _world(runtime, tenant)
    b = sign_in(owner)
    base = _create(b)
    graph = graph_of(b.get(base))
    # The menu of step types comes from the registry.
    menu = _act(b, base, graph, "add:||")
    for kind in ("send_email", "wait_duration", "wait_for_event", "branch", "set_stage", "goto"):
        assert f'id="new-{kind}"' in menu.text
    form = _act(b, base, graph, "new:send_email:||")
    assert 'name="f.template_id"' in form.text and "Welcome" in form.text
    # Saving without a template: the fault is at the field, nothing is added.
    missing = _act(
        b, base, graph, "save", editing="new", new_type="send_email", slot="||", step_id="email-1"
    )
    assert "This field is required" in missing.text
    assert graph_of(missing) == graph
    added = _act(
        b,
        base,
        graph,
        "save",
        editing="new",
        new_type="send_email",
        slot="||",
        step_id="email-1",
        **{"f.template_id": str(world["template_id"]), "f.name": "Welcome email"},
    )
    graph = graph_of(added)
    assert [s["id"] for s in graph["steps"]] == ["email-1", "end-1"]
    assert graph["steps"][0]["next"] == "end-1"
    assert "Unsaved changes" in added.text
    graph = graph_of(
        _act(
            b,
            base,
            graph,
            "save",
            editing="new",
            new_type="wait_duration",
            slot="email-1||",
            step_id="wait-1",
            **{"f.duration.days": "3", "f.duration.hours": "0", "f.duration.minutes": "0"},
        )
    )
    graph = graph_of(
        _act(
            b,
            base,
            graph,
            "save",
            editing="new",
            new_type="wait_for_event",
            slot="wait-1||",
            step_id="event-1",
            **{"f.event.kind": "opened", "f.timeout.days": "2"},
        )
    )
    # A branch whose rule names a field that does not exist: the segment compiler's
    # fault is shown at the condition, and nothing is added.
    bad = _act(
        b,
        base,
        graph,
        "save",
        editing="new",
        new_type="branch",
        slot="event-1||",
        step_id="branch-1",
        **{"f.conditions.0.rule": '{"field": "no_such_field", "op": "is_set"}'},
    )
    assert 'id="sf-conditions-0-rule-error"' in bad.text
    assert graph_of(bad) == graph
    fixed = _act(
        b,
        base,
        graph,
        "save",
        editing="new",
        new_type="branch",
        slot="event-1||",
        step_id="branch-1",
        **{"f.conditions.0.rule": "", "preset.0": json.dumps({"list": str(world["list_id"])})},
    )
    graph = graph_of(fixed)
    branch = next(s for s in graph["steps"] if s["id"] == "branch-1")
    assert branch["fallback"] == "end-1"
    path_end = branch["conditions"][0]["next"]
    assert "If condition 1 holds" in fixed.text and "Otherwise (fallback)" in fixed.text
    graph = graph_of(
        _act(
            b,
            base,
            graph,
            "save",
            editing="new",
            new_type="set_stage",
            slot="|branch-1|conditions/0/next",
            step_id="stage-1",
            **{"f.stage": "active"},
        )
    )
    branch = next(s for s in graph["steps"] if s["id"] == "branch-1")
    assert branch["conditions"][0]["next"] == "stage-1"
    stage = next(s for s in graph["steps"] if s["id"] == "stage-1")
    assert stage["next"] == path_end
    page = _act(b, base, graph, "close")
    assert 'id="builder-valid"' in page.text
    saved = b.post(f"{base}/draft", {"graph": json.dumps(graph)})
    assert saved.status_code == 303 and saved.headers["location"].endswith("?done=saved")
    assert _draft(runtime, base) == json.loads(json.dumps(service_dump(runtime, base)))
    order = [s["id"] for s in _draft(runtime, base)["steps"]]
    assert order[:4] == ["email-1", "wait-1", "event-1", "branch-1"]
    # Editing a step keeps its place; moving and deleting rewire the path.
    edit = _act(b, base, graph, "edit:wait-1")
    assert 'value="3"' in edit.text
    graph = graph_of(
        _act(
            b,
            base,
            graph,
            "save",
            editing="wait-1",
            **{"f.duration.days": "5", "f.duration.hours": "0", "f.duration.minutes": "0"},
        )
    )
    wait = next(s for s in graph["steps"] if s["id"] == "wait-1")
    assert wait["duration"]["days"] == 5 and wait["next"] == "event-1"
    moved = graph_of(_act(b, base, graph, "up:wait-1"))
    assert [s["id"] for s in moved["steps"]][:2] == ["wait-1", "email-1"]
    assert next(s for s in moved["steps"] if s["id"] == "email-1")["next"] == "event-1"
    gone = graph_of(_act(b, base, graph, "delete:wait-1"))
    assert next(s for s in gone["steps"] if s["id"] == "email-1")["next"] == "event-1"
    assert "wait-1" not in {s["id"] for s in gone["steps"]}


def service_dump(runtime, base: str) -> dict[str, Any]:
    with runtime.database.session() as session:
        return session.get(Workflow, uuid.UUID(base.rsplit("/", 1)[1])).draft


def test_validation_problems_show_at_their_step_and_block_activation(
    owner, sign_in, runtime, tenant
):
    world = _world(runtime, tenant)
    b = sign_in(owner)
    base = _create(b)
    graph = {
        "steps": [
            {"id": "hello", "type": "send_email", "template_id": str(world["template_id"])},
            {"id": "choose", "type": "branch", "conditions": [{"rule": {}, "next": "hello"}]},
        ]
    }
    page = _act(b, base, graph, "close")
    assert 'id="step-choose-faults"' in page.text
    assert "A branch needs a fallback path" in page.text
    assert "Steps no path reaches" in page.text  # "choose" follows nothing
    refused = b.post(f"{base}/activate", {"graph": json.dumps(graph)})
    assert refused.status_code == 422
    assert 'id="step-choose-faults"' in refused.text
    with runtime.database.session() as session:
        assert session.get(Workflow, uuid.UUID(base.rsplit("/", 1)[1])).status == "draft"
    # A graph the page cannot read is a clear error, not a crash.
    broken = b.post(f"{base}/builder", {"graph": "{not json", "action": "close"})
    assert broken.status_code == 422 and "could not be read" in broken.text
    partial = b.post(f"{base}/builder", {"graph": "[]", "action": "close"}, htmx=True)
    assert partial.status_code == 422 and partial.headers["HX-Retarget"] == "#messages"
    gone = _act_raw(b, base, graph, "edit:no-such-step")
    assert gone.status_code == 422 and "no longer in the workflow" in gone.text


def _hello_then_wait(world: dict[str, Any], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Send the "Hello" email, wait 3 days, then the steps ``after``."""
    return {
        "steps": [
            {
                "id": "hello",
                "type": "send_email",
                "name": "Hello",
                "template_id": str(world["template_id"]),
                "next": "pause",
            },
            {
                "id": "pause",
                "type": "wait_duration",
                "duration": {"days": 3},
                "next": after[0]["id"],
            },
            *after,
        ]
    }


def test_activate_enroll_counts_publish_and_history(owner, sign_in, runtime, tenant, audit_trail):
    world = _world(runtime, tenant, members=2)
    b = sign_in(owner)
    base = _create(b)
    graph = _hello_then_wait(
        world,
        [
            {"id": "bye", "type": "set_stage", "stage": "active", "next": "end"},
            {"id": "end", "type": "exit"},
        ],
    )
    activated = b.post(f"{base}/activate", {"graph": json.dumps(graph)})
    assert activated.status_code == 303, activated.text
    page = b.get(activated.headers["location"])
    assert "The workflow is active" in page.text and 'id="enroll"' in page.text
    refused = b.post(f"{base}/enroll", {"audience": "list:not-an-id"})
    assert refused.status_code == 422 and "Choose a list or a segment" in refused.text
    enrolled = b.post(f"{base}/enroll", {"audience": f"list:{world['list_id']}"})
    assert enrolled.status_code == 303
    assert "Enrolled 2 contacts; 0 skipped" in b.get(enrolled.headers["location"]).text
    again = b.post(f"{base}/enroll", {"audience": f"list:{world['list_id']}"})
    assert "Enrolled 0 contacts; 2 skipped" in b.get(again.headers["location"]).text
    with runtime.bound_session(tenant[1]) as session:
        segment = segments.create_segment(
            session,
            tenant[0].id,
            name="On the list",
            description="",
            rule={"list": str(world["list_id"])},
            actor=SYSTEM,
        )
    by_segment = b.post(f"{base}/enroll", {"audience": f"segment:{segment.id}"})
    assert "Enrolled 0 contacts; 2 skipped" in b.get(by_segment.headers["location"]).text
    missing = b.post(f"{base}/enroll", {"audience": f"segment:{uuid.uuid4()}"})
    assert missing.status_code == 404 and "Enroll contacts" in missing.text
    # Only whole numbers from the URL, the words are the page's own.
    forged = b.get(f"{base}?done=enrolled&enrolled=<b>x</b>&skipped=1")
    assert "<b>x</b>" not in forged.text and "Enrolled" not in forged.text
    engine.advance_due_runs(runtime, now=utcnow(), tenant_id=tenant[0].id)
    page = b.get(base)
    assert re.search(r'data-now="pause">2<', page.text)
    assert re.search(r'data-through="hello">2<', page.text)
    assert re.search(r'data-sent="hello">2<', page.text)
    listing = b.get("/workflows")
    assert "active" in listing.text and "<td>2</td>" in listing.text
    # Remove the wait the contacts are on: the review says where they go.
    new_graph = {"steps": [s for s in graph["steps"] if s["id"] != "pause"]}
    new_graph["steps"][0]["next"] = "bye"
    review = b.post(f"{base}/review", {"graph": json.dumps(new_graph)})
    assert review.status_code == 200, review.text
    assert "Publish version 2" in review.text
    assert re.search(r'id="review-affected">2<', review.text)
    assert "step <code>bye</code>" in review.text
    assert "1 removed (pause)" in review.text
    published = b.post(f"{base}/publish", {"graph": json.dumps(new_graph)})
    assert published.status_code == 303 and published.headers["location"].endswith("published")
    assert audit_trail(tenant, "workflow.publish")[-1].details["moved"] == 2
    history = b.get(f"{base}/versions")
    assert "Version 2" in history.text and "Version 1" in history.text
    assert "1 removed (pause)" in history.text and owner.email in history.text
    old = b.get(f"{base}/versions/1")
    assert old.status_code == 200 and 'id="step-pause"' in old.text
    assert "Edit step" not in old.text and "+ Add step" not in old.text
    assert b.get(f"{base}/versions/9").status_code == 404
    runs = b.get(f"{base}/runs")
    contact = world["contacts"][0]
    assert str(contact)[:8] in runs.text
    run = b.get(f"{base}/runs/{contact}")
    assert run.status_code == 200 and "hello" in run.text and "migrated" in run.text
    # The contact's page loads its workflows and the steps taken.
    profile = b.get(f"/contacts/{contact}")
    assert f'hx-get="/workflows/contacts/{contact}"' in profile.text
    panel = b.get(f"/workflows/contacts/{contact}", headers={"HX-Request": "true"})
    assert panel.status_code == 200 and "<html" not in panel.text
    assert "Welcome series" in panel.text and "<strong>hello</strong>" in panel.text
    assert "migrated" in panel.text
    whole = b.get(f"/workflows/contacts/{contact}")
    assert "<html" in whole.text and "Welcome series" in whole.text
    # Pause, resume, archive.
    assert b.post(f"{base}/pause").headers["location"].endswith("paused")
    assert b.post(f"{base}/resume").headers["location"].endswith("resumed")
    wrong = b.post(f"{base}/resume")
    assert wrong.status_code == 409 and "cannot resume" in wrong.text
    assert b.post(f"{base}/archive").headers["location"].endswith("archived")
    assert "+ Add step" not in b.get(base).text


def test_the_dry_run_masks_data_dependent_steps_unless_revealed(
    owner, make_person, sign_in, runtime, tenant, audit_trail
):
    world = _world(runtime, tenant, members=1)
    steps = [
        {
            "id": "hello",
            "type": "send_email",
            "template_id": str(world["template_id"]),
            "next": "c",
        },
        {
            "id": "c",
            "type": "branch",
            "conditions": [{"rule": {"list": str(world["list_id"])}, "next": "in"}],
            "fallback": "out",
        },
        {"id": "in", "type": "set_stage", "stage": "active", "next": None},
        {"id": "out", "type": "exit"},
    ]
    workflow_id = make_workflow(runtime, tenant, world["template_id"], steps=steps, activate=False)
    base = f"/workflows/{workflow_id}"
    contact = str(world["contacts"][0])
    analyst = sign_in(make_person(tenant, "analyst"))
    masked = analyst.post(f"{base}/simulate", {"contact_id": contact}, htmx=True)
    assert masked.status_code == 200 and "<html" not in masked.text
    assert "<code>hello</code>" in masked.text and "<code>c</code>" in masked.text
    assert "<code>in</code>" not in masked.text and 'id="simulation-hidden"' in masked.text
    assert "Ann" not in masked.text
    assert analyst.post(f"{base}/simulate/reveal", {"contact_id": contact}).status_code == 403
    unknown = analyst.post(f"{base}/simulate", {"contact_id": str(uuid.uuid4())}, htmx=True)
    assert unknown.status_code == 422 and "No such contact" in unknown.text
    b = sign_in(owner)
    revealed = b.post(f"{base}/simulate/reveal", {"contact_id": contact}, htmx=True)
    assert revealed.status_code == 200
    assert "<code>in</code>" in revealed.text and "condition:0" in revealed.text
    assert "Ann" in revealed.text
    views = audit_trail(tenant, "contact.view_phi")
    assert views and views[-1].details["via"] == "workflow_simulation"


def test_roles_readers_see_but_do_not_edit(make_person, sign_in, runtime, tenant):
    world = _world(runtime, tenant, members=1)
    workflow_id = make_workflow(runtime, tenant, world["template_id"], world["contacts"][0])
    base = f"/workflows/{workflow_id}"
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get(base)
    assert page.status_code == 200 and 'id="step-welcome"' in page.text
    assert "+ Add step" not in page.text and "Edit step" not in page.text
    assert 'id="enroll"' not in page.text and "/workflows/new" not in analyst.get("/workflows").text
    graph = graph_of(page)
    assert analyst.post(f"{base}/builder", {"graph": json.dumps(graph)}).status_code == 403
    assert analyst.post(f"{base}/pause").status_code == 403
    viewer = sign_in(make_person(tenant, "auditor"))
    assert viewer.get(base).status_code == 403


def test_another_organizations_workflow_is_not_found(owner, sign_in, runtime, make_tenant):
    elsewhere = make_tenant()
    world = _world(runtime, elsewhere, members=1)
    workflow_id = make_workflow(runtime, elsewhere, world["template_id"])
    b = sign_in(owner)
    assert b.get(f"/workflows/{workflow_id}").status_code == 404
    assert b.post(f"/workflows/{workflow_id}/pause").status_code == 404
    assert "Welcome journey" not in b.get("/workflows").text
    with runtime.database.session() as session:
        assert session.get(Workflow, workflow_id).status == "active"
    assert (utcnow() - timedelta(seconds=1)) < utcnow()


COUNTS = re.compile(r'name="counts" value="([^"]*)"')


def test_builder_edits_reuse_the_counts_the_page_was_drawn_with(owner, sign_in, runtime, tenant):
    """An edit in the builder changes no run: its HTMX response shows the counts the
    page carried in its form (a million runs take seconds to count) and counts again
    only when they are missing or malformed."""
    world = _world(runtime, tenant, members=2)
    b = sign_in(owner)
    base = _create(b)
    graph = _hello_then_wait(world, [{"id": "end", "type": "exit"}])
    assert b.post(f"{base}/activate", {"graph": json.dumps(graph)}).status_code == 303
    b.post(f"{base}/enroll", {"audience": f"list:{world['list_id']}"})
    engine.advance_due_runs(runtime, now=utcnow(), tenant_id=tenant[0].id)
    page = b.get(base)
    carried = json.loads(html.unescape(COUNTS.search(page.text).group(1)))
    assert carried["current"] == {"pause": 2} and carried["emails"]["hello"] == [2, 0, 0]

    # The page's own counts come back as they were drawn.
    same = _act(b, base, graph, "edit:pause", counts=json.dumps(carried))
    assert re.search(r'data-now="pause">2<', same.text)
    assert json.loads(html.unescape(COUNTS.search(same.text).group(1))) == carried
    # What the form carries is shown (they are the page's figures, not counted again).
    carried["current"]["pause"] = 1234
    reused = _act(b, base, graph, "edit:pause", counts=json.dumps(carried))
    assert re.search(r'data-now="pause">1,234<', reused.text)
    # Missing or malformed: counted again.
    for bad in (
        "",
        "{not json",
        "[]",
        '{"emails": {"hello": [1, 2]}}',
        json.dumps({**carried, "current": {"pause": -1}}),
        "[" * 100_000,
    ):
        recounted = _act(b, base, graph, "edit:pause", counts=bad)
        assert re.search(r'data-now="pause">2<', recounted.text), bad[:40]
    # A full page (no HTMX) always counts.
    full = b.post(
        f"{base}/builder",
        {"graph": json.dumps(graph), "action": "close", "counts": json.dumps(carried)},
    )
    assert re.search(r'data-now="pause">2<', full.text)
