"""The Webhooks page in Chromium: an owner adds an endpoint (a real HTTP server on
loopback), copies the secret shown once, watches a failed delivery in the log, replays
it and sees it delivered -- with the receiver verifying every signature with that
secret -- then sends a test event. Screenshot: webhooks-*.png."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from carepost.accounts import service as accounts
from carepost.accounts import sessions
from carepost.api.deps import SESSION_COOKIE
from carepost.webhooks import service as webhooks
from carepost.webhooks.delivery import deliver_due
from carepost.webhooks.signing import HEADER, verify_signature
from tests.canaries import secret_value
from tests.web.people import create_person
from tests.webhooks.receiver import running_receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver():
    with running_receiver() as running:
        yield running


@pytest.fixture
def owner_page(page: Page, runtime, make_tenant, live_server):
    """The page, signed in as an owner of a fresh organization (session made directly:
    the sign-in flow has its own browser tests)."""
    tenant = make_tenant("Harbor Pediatrics")
    person = create_person(runtime, tenant, "owner")
    with runtime.bound_session(tenant[1]) as session:
        user = accounts.get_user(session, tenant[0].id, person.id)
        token, _row = sessions.create_session(
            session, user=user, tenant=tenant[0], stage=sessions.STAGE_MFA_OK
        )
    secret_value(token)
    page.context.add_cookies(
        [
            {
                "name": SESSION_COOKIE,
                "value": token,
                "domain": "127.0.0.1",
                "path": "/",
                "secure": True,
                "httpOnly": True,
            }
        ]
    )
    return page, tenant


def test_add_endpoint_see_the_log_and_replay(owner_page, receiver, runtime, screenshots):
    page, tenant = owner_page
    page.goto("/")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Webhooks")

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("Description").fill("Our EHR bridge")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#created-webhook")).to_contain_text("shown only once")
    secret = secret_value(page.locator("#webhook-secret").inner_text())
    assert secret.startswith("whsec_")
    page.screenshot(path=str(screenshots / "webhooks-list.png"), full_page=True)

    # A bounce happens; the receiver is down at first.
    with runtime.bound_session(tenant[1]) as session:
        assert webhooks.emit(session, tenant[0].id, "message.bounced", {"message_id": "m-1"}) == 1
    receiver.statuses = [503]
    deliver_due(runtime, tenant_id=tenant[0].id)

    page.get_by_role("link", name=receiver.url).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Webhook endpoint")
    log = page.get_by_role("table", name="Delivery log, newest first")
    expect(log).to_contain_text("message.bounced")
    expect(log).to_contain_text("HTTP 503")
    page.screenshot(path=str(screenshots / "webhooks-log-failed.png"), full_page=True)

    page.get_by_role("button", name="Replay").first.click()
    expect(page.locator(".notice")).to_contain_text("queued again")
    deliver_due(runtime, tenant_id=tenant[0].id)
    page.reload()
    expect(log.get_by_text("delivered")).to_have_count(1)
    page.screenshot(path=str(screenshots / "webhooks-log-replayed.png"), full_page=True)

    page.get_by_role("button", name="Send test event").click()
    expect(page.locator(".notice")).to_contain_text("test event is queued")
    deliver_due(runtime, tenant_id=tenant[0].id)

    assert len(receiver.requests) >= 3
    for request in receiver.requests:
        assert verify_signature(request.headers[HEADER], request.body, secret)
    types = [json.loads(r.body)["type"] for r in receiver.requests]
    assert types[-1] == "webhook.test"
