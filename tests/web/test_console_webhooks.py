"""The Webhooks console pages: the secret shown once, the log and its replay button,
rotation showing the new secret once."""

from __future__ import annotations

from carepost.webhooks import service as webhooks
from tests.canaries import secret_value


def test_add_endpoint_shows_the_secret_once(owner, sign_in):
    browser = sign_in(owner)
    created = browser.post(
        "/webhooks",
        {"url": "https://hooks.example.org/carepost", "event_types": ["message.bounced", "*"]},
    )
    assert created.status_code == 201
    secret = secret_value(created.text.split('id="webhook-secret">')[1].split("<")[0])
    assert secret.startswith("whsec_")
    listed = browser.get("/webhooks")
    assert "hooks.example.org" in listed.text and secret not in listed.text


def test_invalid_urls_are_explained(owner, sign_in):
    browser = sign_in(owner)
    refused = browser.post(
        "/webhooks", {"url": "http://hooks.example.org/x", "event_types": "message.bounced"}
    )
    assert refused.status_code == 422
    assert "must use https" in refused.text.lower()


def test_detail_page_log_replay_and_rotation(owner, sign_in, runtime, tenant):
    browser = sign_in(owner)
    with runtime.bound_session(tenant[1]) as session:
        endpoint = webhooks.create_endpoint(
            session,
            tenant[0].id,
            url="https://hooks.example.org/carepost",
            event_types=["*"],
            actor=webhooks_actor(),
        ).endpoint
        webhooks.emit(session, tenant[0].id, "message.clicked", {"message_id": "m"})
        [delivery] = webhooks.list_deliveries(session, tenant[0].id, endpoint.id)
    page = browser.get(f"/webhooks/{endpoint.id}")
    assert page.status_code == 200 and "message.clicked" in page.text
    assert f"/deliveries/{delivery.id}/replay" in page.text
    replayed = browser.post(f"/webhooks/{endpoint.id}/deliveries/{delivery.id}/replay", {})
    assert replayed.status_code == 303
    assert replayed.headers["location"].endswith("?done=replayed")
    rotated = browser.post(f"/webhooks/{endpoint.id}/rotate", {})
    assert rotated.status_code == 200
    secret_value(rotated.text.split('id="webhook-secret">')[1].split("<")[0])
    assert 'id="webhook-secret"' not in browser.get(f"/webhooks/{endpoint.id}").text


def webhooks_actor():
    from carepost.audit.service import SYSTEM

    return SYSTEM
