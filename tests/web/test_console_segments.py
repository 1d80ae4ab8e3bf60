"""The segment builder page: the live count through the segments preview service, faults
pointing at the node at fault, saving a segment; analysts count but do not save."""

from __future__ import annotations

import html
import json

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from tests.canaries import phi_value


def _contacts(runtime, tenant, stages):
    _row, keys = tenant
    with runtime.bound_session(keys) as session:
        for _stage in stages:
            contacts.create_contact(
                session,
                keys,
                values={"email": f"{phi_value('mail').lower()}@example.org"},
                actor=SYSTEM,
            )


def test_the_live_count_follows_the_rule(tenant, make_person, sign_in, runtime):
    _contacts(runtime, tenant, ["new", "new", "new"])
    b = sign_in(make_person(tenant, "marketer"))
    page = b.get("/segments")
    assert page.status_code == 200
    assert 'hx-post="/segments/preview"' in page.text and 'id="live-count"' in page.text
    rule = {"field": "journey_stage", "op": "equals", "value": "new"}
    counted = b.post("/segments/preview", {"rule": json.dumps(rule)}, htmx=True)
    assert counted.status_code == 200
    assert '<span class="live-count__value">3</span> contacts match now.' in counted.text
    none = b.post(
        "/segments/preview",
        {"rule": json.dumps({"field": "journey_stage", "op": "equals", "value": "active"})},
        htmx=True,
    )
    assert '<span class="live-count__value">0</span> contacts' in none.text


def test_faults_point_at_the_node_and_json_errors_at_the_line(tenant, make_person, sign_in):
    b = sign_in(make_person(tenant, "marketer"))
    b.get("/segments")
    broken = b.post("/segments/preview", {"rule": '{"all": [\n  {"list": 12'}, htmx=True)
    assert "not valid JSON" in broken.text and "line 2" in broken.text
    bad = {"all": [{"suppressed": "email"}, {"field": "no_such_field", "op": "equals"}]}
    faults = b.post("/segments/preview", {"rule": json.dumps(bad)}, htmx=True)
    assert "rule/all/1" in html.unescape(faults.text)
    assert "live-count__value" not in faults.text


def test_save_a_segment_and_see_it_listed(tenant, make_person, sign_in, audit_trail):
    b = sign_in(make_person(tenant, "marketer"))
    b.get("/segments")
    saved = b.post(
        "/segments",
        {"name": "Unreachable by email", "rule": json.dumps({"suppressed": "email"})},
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/segments?done=created"
    page = b.follow(saved)
    assert "Segment saved." in page.text and "Unreachable by email" in page.text
    assert [e.action for e in audit_trail(tenant, "segment.create")] == ["segment.create"]
    invalid = b.post("/segments", {"name": "Broken", "rule": '{"nope": 1}'})
    assert invalid.status_code == 422 and 'id="segment-rule-error"' in invalid.text
    assert 'value="Broken"' in invalid.text  # the good input is kept
    nameless = b.post("/segments", {"name": "", "rule": json.dumps({"suppressed": "any"})})
    assert nameless.status_code == 422 and 'id="segment-name-error"' in nameless.text
    taken = b.post(
        "/segments", {"name": "Unreachable by email", "rule": json.dumps({"suppressed": "sms"})}
    )
    assert taken.status_code == 409 and 'id="segment-name-error"' in taken.text


def test_an_analyst_counts_but_does_not_save(tenant, make_person, sign_in):
    b = sign_in(make_person(tenant, "analyst"))
    page = b.get("/segments")
    assert page.status_code == 200 and "New segment" not in page.text
    counted = b.post("/segments/preview", {"rule": json.dumps({"suppressed": "any"})}, htmx=True)
    assert "live-count__value" in counted.text
    refused = b.post("/segments", {"name": "X", "rule": json.dumps({"suppressed": "any"})})
    assert refused.status_code == 403
