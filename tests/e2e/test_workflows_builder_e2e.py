"""The workflow builder in Chromium, as a marketer builds issue 7's journey by clicking:
send the welcome email -> wait 3 days -> wait for an open (2 days at most) -> branch
on a list -> set the journey stage; sees a branch rule the segment compiler refuses,
fixes it, activates the workflow, enrolls a list, sees the counts on the diagram after
the worker's round, removes the wait the contacts are on, reviews where they go,
publishes version 2 and reads the history. No script errors, no CSP violations;
screenshots go to ``$CAREPOST_TEST_ARTIFACTS/screenshots/workflows-*.png``."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from carepost.core.database import utcnow
from carepost.workflows import engine
from tests.e2e.conftest import settle, sign_in
from tests.web.people import create_person
from tests.web.test_workflows_console import _world

pytestmark = pytest.mark.e2e


@pytest.fixture
def marketer(runtime, make_tenant):
    tenant = make_tenant("Riverside Family Practice")
    person = create_person(runtime, tenant, "marketer", name="Ines Okafor")
    email, password = person.email, person.password
    return tenant, email, password, _world(runtime, tenant, members=3)


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"workflows-{name}.png"), full_page=True)


def add_step(page: Page, where: str, kind: str) -> None:
    """Open the "add a step" menu at ``where`` and choose ``kind``: its form opens."""
    page.get_by_role("button", name=f"Add a step {where}", exact=True).click()
    settle(page)
    page.locator(f"#new-{kind}").click()
    settle(page)
    expect(page.locator("#step-form")).to_be_visible()


def save_step(page: Page) -> None:
    page.locator("#save-step").click()
    settle(page)


def test_build_activate_enroll_publish(
    page: Page, live_server, runtime, marketer, screenshots, chromium
):
    tenant, email, password, _data = marketer
    sign_in(page, tenant[0].slug, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Riverside Family Practice")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Workflows").click()
    page.get_by_role("link", name="New workflow").click()
    page.get_by_label("Workflow name").fill("New patient welcome")
    page.get_by_label("Sender name").fill("Riverside")
    page.get_by_label("Sender address").fill("care@clinic.example")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New patient welcome")
    expect(page.locator("#workflow-status")).to_have_text("draft")

    # 1. Send the welcome email, first.
    add_step(page, "at the start", "send_email")
    page.get_by_label("Email template").select_option(label="Welcome")
    page.locator("#sf-name").fill("Welcome email")
    save_step(page)
    expect(page.locator("#step-email-1")).to_contain_text("“Welcome” (marketing)")
    expect(page.locator("#unsaved")).to_be_visible()

    # 2. Wait 3 days.
    add_step(page, "after email-1", "wait_duration")
    page.locator("#sf-duration-days").fill("3")
    save_step(page)
    expect(page.locator("#step-wait-1")).to_contain_text("3 days")

    # 3. Wait for an open, two days at most.
    add_step(page, "after wait-1", "wait_for_event")
    page.get_by_label("Wait for", exact=True).select_option("opened")
    settle(page)  # choosing the kind redraws the form for it
    page.locator("#sf-timeout-days").fill("2")
    page.locator("#sf-timeout-hours").fill("0")
    save_step(page)
    expect(page.locator("#step-event-1")).to_contain_text("an open of the email, at most 2 days")

    # 4. A branch: a rule naming a field that does not exist is refused at its condition.
    add_step(page, "after event-1", "branch")
    page.get_by_role("button", name="Edit condition 1 as JSON").click()
    settle(page)
    page.locator("#sf-conditions-0-rule").fill('{"field": "favourite_colour", "op": "is_set"}')
    save_step(page)
    expect(page.locator("#sf-conditions-0-rule-error")).to_be_visible()
    shoot(page, screenshots, "rule-error")
    page.locator("#sf-conditions-0-rule").fill("")
    page.locator("#sf-preset-0").select_option(label="Is in the list “New patients”")
    save_step(page)
    expect(page.locator("#step-branch-1")).to_contain_text("in the list “New patients”")
    expect(page.get_by_text("If condition 1 holds")).to_be_visible()

    # 5. Contacts on the list get the "active" journey stage.
    add_step(page, "at the start of “If condition 1 holds” of branch-1", "set_stage")
    page.get_by_label("Journey stage", exact=True).select_option("active")
    save_step(page)
    expect(page.locator("#step-stage-1")).to_contain_text("to “active”")
    expect(page.locator("#builder-valid")).to_be_visible()
    shoot(page, screenshots, "built")

    # Activate: the draft is saved and published as version 1.
    page.locator("#activate").click()
    expect(page.locator("#workflow-status")).to_have_text("active")
    expect(page.locator("#workflow-version")).to_have_text("1")

    # Enroll the list; the worker's round sends the email and parks them on the wait.
    page.get_by_label("List or segment").select_option(label="List: New patients")
    page.locator("#enroll-button").click()
    expect(page.locator("#messages")).to_contain_text("Enrolled 3 contacts")
    engine.advance_due_runs(runtime, now=utcnow(), tenant_id=tenant[0].id)
    page.reload()
    expect(page.locator('[data-now="wait-1"]')).to_have_text("3")
    expect(page.locator('[data-sent="email-1"]')).to_have_text("3")
    expect(page.locator("#workflow-runs")).to_contain_text("3 enrolled")
    shoot(page, screenshots, "counts")

    # A new version without the wait: the review says where its 3 contacts go.
    page.get_by_role("button", name="Delete step wait-1").click()
    settle(page)
    expect(page.locator("#step-wait-1")).to_have_count(0)
    page.locator("#review").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Publish version 2")
    expect(page.locator("#review-affected")).to_have_text("3")
    expect(page.locator("#review-moves")).to_contain_text("event-1")
    shoot(page, screenshots, "review")
    page.locator("#publish").click()
    expect(page.locator("#messages")).to_contain_text("The new version is published")
    expect(page.locator("#workflow-version")).to_have_text("2")
    expect(page.locator('[data-now="event-1"]')).to_have_text("3")

    # The history: two versions, what changed, who published them.
    page.get_by_role("link", name="Version history").click()
    expect(page.locator("#version-2")).to_contain_text("1 removed (wait-1)")
    expect(page.locator("#version-2")).to_contain_text(email)
    expect(page.locator("#version-1")).to_contain_text("first version")
    shoot(page, screenshots, "history")
    page.get_by_role("link", name="Version 1").click()
    expect(page.locator("#step-wait-1")).to_be_visible()
    expect(page.get_by_role("button", name="Delete step wait-1")).to_have_count(0)


def test_leaving_unsaved_edits_asks_first(page: Page, live_server, marketer, chromium):
    """An edit not yet saved: leaving the page asks (staying keeps the edit); saving
    the draft leaves without asking, and a page without edits never asks."""
    tenant, email, password, _data = marketer
    sign_in(page, tenant[0].slug, email, password)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Workflows").click()
    page.get_by_role("link", name="New workflow").click()
    page.get_by_label("Workflow name").fill("Flu shot reminder")
    page.get_by_label("Sender address").fill("care@clinic.example")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Flu shot reminder")
    workflow_url = page.url

    asked: list[str] = []

    def stay(dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", stay)
    add_step(page, "at the start", "wait_duration")
    page.locator("#sf-duration-days").fill("2")
    save_step(page)
    expect(page.locator("#unsaved")).to_be_visible()

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Workflows").click()
    for _ in range(50):
        if asked:
            break
        page.wait_for_timeout(100)
    assert asked == ["beforeunload"]
    assert page.url == workflow_url  # stayed, the edit with it
    expect(page.locator("#step-wait-1")).to_contain_text("2 days")

    page.locator("#save-draft").click()
    expect(page.locator("#messages")).to_contain_text("saved")
    expect(page.locator("#unsaved")).to_have_count(0)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Workflows").click()
    expect(page.get_by_role("link", name="New workflow")).to_be_visible()
    assert asked == ["beforeunload"]  # neither the save nor leaving a saved page asked
