"""The workflow features of this session in Chromium: the Add to Segment step (built,
refused when its segment is gone, run, seen on the segment's page), branch conditions
edited with the segment builder's rows, and the workflow steps a contact took merged
into the contact's timeline. No script errors, no CSP violations; screenshots go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/wffeat-*.png``."""

from __future__ import annotations

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
