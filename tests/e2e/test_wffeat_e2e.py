"""The workflow features of this session in Chromium: the Add to Segment step (built,
refused when its segment is gone, run, seen on the segment's page), branch conditions
edited with the segment builder's rows, and the workflow steps a contact took merged
into the contact's timeline. No script errors, no CSP violations; screenshots go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/wffeat-*.png``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.segments import service as segments
from carepost.workflows import engine
from tests.e2e.conftest import settle, sign_in
from tests.e2e.test_workflows_builder_e2e import add_step, save_step
from tests.web.people import create_person
from tests.web.test_workflows_console import _world

pytestmark = pytest.mark.e2e


@pytest.fixture
def marketer(runtime, make_tenant):
    tenant = make_tenant("Lakeside Clinic")
    person = create_person(runtime, tenant, "marketer", name="Ines Okafor")
    data = _world(runtime, tenant, members=2)
    with runtime.bound_session(tenant[1]) as session:
        for name in ("VIP patients", "Gone soon"):
            row = segments.create_segment(
                session,
                tenant[0].id,
                name=name,
                description="",
                rule={"field": "language", "op": "equals", "value": "fr"},
                actor=SYSTEM,
            )
            data[name] = row.id
    return tenant, person.email, person.password, data


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"wffeat-{name}.png"), full_page=True)


def new_workflow(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Workflows").click()
    page.get_by_role("link", name="New workflow").click()
    page.get_by_label("Workflow name").fill(name)
    page.get_by_label("Sender name").fill("Lakeside")
    page.get_by_label("Sender address").fill("care@clinic.example")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)


def test_add_to_segment_step(page: Page, live_server, runtime, marketer, screenshots, chromium):
    tenant, email, password, data = marketer
    sign_in(page, tenant[0].slug, email, password)
    new_workflow(page, "Make them VIPs")

    # A step on a segment deleted before activation is refused at the step.
    add_step(page, "at the start", "segment_add")
    page.get_by_label("Segment", exact=True).select_option(label="Gone soon")
    save_step(page)
    expect(page.locator("#step-segment-1")).to_contain_text("“Gone soon”")
    with runtime.bound_session(tenant[1]) as session:
        segments.delete_segment(session, tenant[0].id, data["Gone soon"], actor=SYSTEM)
    page.get_by_role("button", name="Edit step segment-1").click()
    settle(page)
    save_step(page)
    expect(page.locator("#step-segment-1-faults")).to_contain_text("no such segment")
    shoot(page, screenshots, "segment-refused")

    # The form stays open (the deleted segment is no longer offered): choose another.
    page.get_by_label("Segment", exact=True).select_option(label="VIP patients")
    save_step(page)
    expect(page.locator("#step-segment-1")).to_contain_text("“VIP patients”")
    expect(page.locator("#builder-valid")).to_be_visible()
    shoot(page, screenshots, "segment-step")
    page.locator("#activate").click()
    expect(page.locator("#workflow-status")).to_have_text("active")

    page.get_by_label("List or segment").select_option(label="List: New patients")
    page.locator("#enroll-button").click()
    expect(page.locator("#messages")).to_contain_text("Enrolled 2 contacts")
    engine.advance_due_runs(runtime, now=utcnow(), tenant_id=tenant[0].id)

    # The segment's page: its rule unchanged, the two added contacts counted.
    page.goto(f"{live_server}/segments/{data['VIP patients']}")
    expect(page.locator("#rule-summary")).to_contain_text("language")
    expect(page.locator("#included-list")).to_contain_text("Added to segment: VIP patients")
    expect(page.locator("#segment-count")).to_contain_text("2")
    shoot(page, screenshots, "segment-included")


def test_branch_conditions_as_rows(
    page: Page, live_server, runtime, marketer, screenshots, chromium
):
    tenant, email, password, data = marketer
    sign_in(page, tenant[0].slug, email, password)
    new_workflow(page, "Branch on rows")

    add_step(page, "at the start", "branch")
    condition = page.locator("#condition-0")
    expect(condition).to_have_attribute("data-mode", "rows")
    # Choosing the kind redraws the row for it (HTMX), as in the segment builder.
    condition.get_by_label("Condition kind").select_option("list")
    settle(page)
    page.locator("#c0-r1-list").select_option(label="New patients")
    settle(page)
    expect(page.locator("#condition-0-count")).to_contain_text("2 contacts match now")
    # A second row, negated: not suppressed for email.
    page.locator("#condition-0").get_by_role("button", name="Add condition").click()
    settle(page)
    page.locator("#c0-r2-kind").select_option("suppressed")
    settle(page)
    page.locator("#c0-r2-suppressed").select_option("email")
    settle(page)
    page.locator("#c0-r2-not").check()
    settle(page)
    shoot(page, screenshots, "branch-rows")
    save_step(page)
    expect(page.locator("#step-branch-1")).to_contain_text("in the list “New patients”")
    expect(page.get_by_text("If condition 1 holds")).to_be_visible()

    # Editing it again shows the same rows; JSON is one click away, and back.
    page.get_by_role("button", name="Edit step branch-1").click()
    settle(page)
    expect(page.locator("#c0-r1-list")).to_have_value(str(data["list_id"]))
    expect(page.locator("#c0-r2-not")).to_be_checked()
    page.get_by_role("button", name="Edit condition 1 as JSON").click()
    settle(page)
    shown = json.loads(page.locator("#sf-conditions-0-rule").input_value())
    assert shown == {"all": [{"list": str(data["list_id"])}, {"not": {"suppressed": "email"}}]}
    page.get_by_role("button", name="Edit condition 1 as rows").click()
    settle(page)
    expect(page.locator("#condition-0")).to_have_attribute("data-mode", "rows")
    page.locator("#c0-row-2").get_by_role("button", name="Remove this condition").click()
    settle(page)
    expect(page.locator("#c0-r2-kind")).to_have_count(0)
    save_step(page)
    expect(page.locator("#builder-valid")).to_be_visible()
    shoot(page, screenshots, "branch-saved")


def test_workflow_steps_in_the_contact_timeline(
    page: Page, live_server, runtime, marketer, screenshots, chromium
):
    from datetime import timedelta

    from carepost.contacts import events
    from tests.web.test_wffeat_timeline import journey_for

    tenant, email, password, data = marketer
    contact_id = data["contacts"][0]
    now = utcnow()
    with runtime.bound_session(tenant[1]) as session:
        events.record_events(
            session,
            tenant[1],
            [
                {
                    "contact_id": str(contact_id),
                    "kind": "portal_login",
                    "occurred_at": (now - timedelta(minutes=minutes)).isoformat(),
                }
                for minutes in (2, 30)
            ],
            actor=SYSTEM,
        )
    journey_for(runtime, tenant, contact_id, now - timedelta(minutes=25))
    sign_in(page, tenant[0].slug, email, password)
    page.goto(f"{live_server}/contacts/{contact_id}")
    items = page.locator("#timeline > li")
    expect(items).to_have_count(4)
    # Newest first: the login 2 minutes ago, the End step (10 minutes ago), the Wait
    # step (25 minutes ago), the login 30 minutes ago.
    expect(items.nth(0)).to_contain_text("portal_login")
    expect(items.nth(1)).to_contain_text("workflow step")
    expect(items.nth(1)).to_contain_text("End done — end")
    expect(items.nth(2)).to_contain_text("Wait pause — waited")
    expect(items.nth(3)).to_contain_text("portal_login")
    expect(items.nth(1).get_by_role("link", name="Check-in journey")).to_be_visible()
    page.locator("#timeline-section").scroll_into_view_if_needed()
    shoot(page, screenshots, "contact-timeline")
    # One source at a time: the steps alone, then the events alone.
    filters = page.get_by_role("navigation", name="Show in the timeline")
    filters.get_by_role("link", name="Workflow steps").click()
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("End done — end")
    expect(filters.get_by_role("link", name="Workflow steps")).to_have_attribute(
        "aria-current", "page"
    )
    shoot(page, screenshots, "contact-timeline-steps")
    filters.get_by_role("link", name="Events").click()
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("portal_login")
    expect(items.nth(1)).to_contain_text("portal_login")
    filters.get_by_role("link", name="Everything").click()
    expect(items).to_have_count(4)
    items.nth(2).get_by_role("link", name="Check-in journey").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check-in journey")
