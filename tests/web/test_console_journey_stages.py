"""The journey stages page: the built-in stages and the organization's own with their
contact counts, a form (HTMX or plain) to add a stage, errors next to their field, read
only without contacts:write, reached from the navigation."""

from __future__ import annotations

import html
import json

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import stages, upserts
from tests.canaries import phi_value


@pytest.fixture
def marketer(tenant, make_person):
    return make_person(tenant, "marketer")


@pytest.fixture
def analyst(tenant, make_person):
    return make_person(tenant, "analyst")


def test_the_page_lists_stages_with_their_contacts(tenant, marketer, sign_in, runtime):
    with runtime.bound_session(tenant[1]) as session:
        stages.define_stage(session, tenant[0].id, key="post-op", label="After surgery")
        item = {"email": f"{phi_value('mail').lower()}@example.org", "journey_stage": "post-op"}
        upserts.upsert_contacts(session, tenant[1], [item], match="email", actor=SYSTEM)
    b = sign_in(marketer)
    assert 'href="/journey-stages"' in b.get("/").text  # in the navigation
    page = b.get("/journey-stages")
    assert page.status_code == 200
    assert "<h1>Journey stages</h1>" in page.text
    row = page.text[page.text.index('id="stage-post-op"') :].split("</tr>", 1)[0]
    assert "After surgery" in row and "<code>post-op</code>" in row
    assert '<a href="/contacts?stage=post-op">1</a>' in row
    for key in ("new", "active", "overdue", "at-risk"):
        assert f'id="stage-{key}"' in page.text


def test_add_a_stage_with_htmx_then_move_a_contact_to_it(
    tenant, marketer, sign_in, runtime, audit_trail
):
    b = sign_in(marketer)
    b.get("/journey-stages")
    added = b.post("/journey-stages", {"label": "After surgery", "key": "post-op"}, htmx=True)
    assert added.status_code == 200, added.text
    assert added.text.lstrip().startswith('<section id="stages"')
    notice = json.loads(added.headers["HX-Trigger"])["carepost:notice"]
    assert notice == "Stage “After surgery” created."
    assert 'id="stage-post-op"' in added.text
    [event] = audit_trail(tenant, "journey_stage.create")
    assert event.details == {"key": "post-op"} and event.actor_type == "user"

    # The contact page now offers it, and the change is kept in the history.
    with runtime.bound_session(tenant[1]) as session:
        item = {"email": f"{phi_value('mail').lower()}@example.org"}
        [result] = upserts.upsert_contacts(session, tenant[1], [item], match="email", actor=SYSTEM)
    contact = b.get(f"/contacts/{result.id}")
    assert '<option value="post-op">After surgery</option>' in contact.text
    moved = b.post(f"/contacts/{result.id}/stage", {"stage": "post-op"}, htmx=True)
    assert "new → <strong>post-op</strong>" in moved.text


def test_add_a_stage_without_script(tenant, marketer, sign_in):
    b = sign_in(marketer)
    b.get("/journey-stages")
    created = b.post("/journey-stages", {"label": "Pre-op", "key": "pre_op"})
    assert created.status_code == 303
    assert created.headers["location"] == "/journey-stages?done=created"
    page = b.follow(created)
    assert "Stage created." in page.text and "<code>pre_op</code>" in page.text


def test_stage_errors_stand_next_to_their_field(tenant, marketer, sign_in, runtime):
    with runtime.bound_session(tenant[1]) as session:
        stages.define_stage(session, tenant[0].id, key="post-op", label="After surgery")
    b = sign_in(marketer)
    b.get("/journey-stages")
    cases = [
        ({"label": "X", "key": "Post Op"}, "key", 422, "lower-case"),
        ({"label": "", "key": "x"}, "label", 422, "enter the label"),
        ({"label": "X", "key": ""}, "key", 422, "enter the key"),
        ({"label": "X", "key": "k" * 41}, "key", 422, "at most 40"),
        ({"label": "Again", "key": "post-op"}, "key", 409, "exists"),
        ({"label": "Again", "key": "overdue"}, "key", 409, "exists"),
    ]
    for htmx in (False, True):
        for data, name, status, message in cases:
            answer = b.post("/journey-stages", data, htmx=htmx)
            assert answer.status_code == status, (data, answer.status_code)
            text = html.unescape(answer.text)
            assert f'id="stage-{name}-error"' in text, data
            assert message in text.lower(), (data, message)
            # What was typed is kept for the person to fix.
            assert f'value="{data["label"]}"' in text or not data["label"]
            assert ("<h1>" in text) is not htmx
    with runtime.bound_session(tenant[1]) as session:
        assert [s.key for s in stages.list_stages(session, tenant[0].id) if not s.built_in] == [
            "post-op"
        ]


def test_an_analyst_sees_the_stages_but_cannot_add_one(
    tenant, analyst, sign_in, runtime, audit_trail
):
    with runtime.bound_session(tenant[1]) as session:
        stages.define_stage(session, tenant[0].id, key="post-op", label="After surgery")
    b = sign_in(analyst)
    page = b.get("/journey-stages")
    assert page.status_code == 200 and "After surgery" in page.text
    assert "Add a stage" not in page.text
    refused = b.post("/journey-stages", {"label": "Pre-op", "key": "pre-op"})
    assert refused.status_code == 403
    assert not [e for e in audit_trail(tenant, "journey_stage.create") if e.actor_type == "user"]


def test_another_organizations_stage_is_not_listed(
    tenant, other_tenant, marketer, sign_in, runtime
):
    with runtime.bound_session(other_tenant[1]) as session:
        stages.define_stage(session, other_tenant[0].id, key="theirs", label="Their stage")
    page = sign_in(marketer).get("/journey-stages")
    assert "theirs" not in page.text and "Their stage" not in page.text
