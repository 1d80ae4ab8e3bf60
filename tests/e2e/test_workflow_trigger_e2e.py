"""The workflow trigger page in Chromium, as a marketer sets how contacts enter: a
segment entry that leaves the segment's current members out (the form follows the
kind chosen, by HTMX), a mistaken event name refused next to its field, the trigger
in words on the workflow's page, and its removal. The segment job then enrolls only a
contact who entered after the trigger was set. Screenshots go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/workflows-trigger-*.png``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.core.database import utcnow
from carepost.segments import service as segments
from carepost.workflows import entry, service
from carepost.workflows.models import WorkflowRun
from tests.e2e.conftest import settle, sign_in
from tests.e2e.test_workflows_builder_e2e import (
    marketer,  # noqa: F401 - fixture
    shoot,
)

pytestmark = pytest.mark.e2e


def test_a_marketer_sets_and_removes_a_segment_trigger(
    page: Page,
    live_server,
    runtime,
    marketer,  # noqa: F811 - the fixture imported above
    screenshots,
    chromium,
):
    tenant, email, password, data = marketer
    with runtime.bound_session(tenant[1]) as session:
        segments.create_segment(
            session,
            tenant[0].id,
            name="New patients segment",
            description="",
            rule={"list": str(data["list_id"])},
            actor=SYSTEM,
        )
        workflow = service.create_workflow(
            session,
            tenant[0].id,
            name="Welcome on entry",
            sender_name="Riverside",
            sender_address="care@clinic.example",
            draft={"steps": [{"id": "hello", "type": "exit"}]},
            actor=SYSTEM,
        )
    sign_in(page, tenant[0].slug, email, password)
    page.goto(f"{live_server}/workflows/{workflow.id}")
    expect(page.locator("#workflow-trigger")).to_contain_text("No trigger")
    page.locator("#trigger-link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("How contacts enter Welcome on entry")

    # A mistake first: an event name that is not one. htmx is a deferred script that
    # wires the kind selector once the document is loaded; a change before that is lost.
    page.wait_for_load_state("load")
    page.get_by_label("Contacts enter when").select_option("event")
    settle(page)
    page.get_by_label("Event name").fill("Portal Login!")
    page.locator("#save-trigger").click()
    expect(page.locator("#trigger-name-error")).to_contain_text("lower-case letters")
    expect(page.get_by_label("Event name")).to_have_attribute("aria-invalid", "true")
    shoot(page, screenshots, "trigger-error")

    # The segment, leaving out who is in it today.
    page.get_by_label("Contacts enter when").select_option("segment_entry")
    settle(page)
    expect(page).to_have_url(f"{live_server}/workflows/{workflow.id}/trigger?kind=segment_entry")
    page.get_by_label("Segment", exact=True).select_option(label="New patients segment")
    page.get_by_label("Contacts already in the segment").select_option("skip")
    page.locator("#save-trigger").click()
    expect(page.locator(".notice--success")).to_contain_text("The trigger is saved")
    expect(page.locator("#trigger-described")).to_have_text(
        "A contact enters the segment New patients segment; contacts already in it when "
        "the trigger was set are left out."
    )
    shoot(page, screenshots, "trigger-saved")
    page.get_by_role("link", name="Back to the workflow").click()
    expect(page.locator("#workflow-trigger")).to_contain_text("New patients segment")

    # The job: the three members are left out, a newcomer enters (once active).
    with runtime.bound_session(tenant[1]) as session:
        service.change_status(session, tenant[0].id, workflow.id, "activate", actor=SYSTEM)
    newcomer = _new_member(runtime, tenant, data["list_id"])
    later = utcnow() + timedelta(minutes=1)
    assert entry.run_periodic(runtime, "segment_entry", now=later) == 1
    with runtime.bound_session(tenant[1]) as session:
        runs = session.query(WorkflowRun).filter_by(workflow_id=workflow.id).all()
        assert [r.contact_id for r in runs] == [newcomer]

    # Removed after confirming: contacts enter only by hand again.
    page.locator("#trigger-link").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#remove-trigger").click()
    expect(page.locator(".notice--success")).to_contain_text("The trigger is removed")
    expect(page.locator("#trigger-described")).to_contain_text("No trigger")
    shoot(page, screenshots, "trigger-removed")


def _new_member(runtime, tenant, list_id):
    from carepost.contacts import service as contacts

    with runtime.bound_session(tenant[1]) as session:
        row = contacts.create_contact(
            session, tenant[1], values={"email": "late-joiner@example.org"}, actor=SYSTEM
        )
        lists.change_members(session, tenant[0].id, list_id, add=[row.id], remove=[], actor=SYSTEM)
        return row.id
