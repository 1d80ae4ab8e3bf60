"""The sender's API of the portal: list, one item with its events and replies'
metadata (never content), recall (the recipient then gets 410), RFC 9457 errors and
the permissions (recall needs messages:send)."""

from __future__ import annotations

import uuid

from tests.portal.conftest import csrf_of, sign_in_with_code

BASE = "/api/v1/portal/messages"


def test_list_get_and_recall(client, runtime, deposit, make_api_key):
    sign_in_with_code(client, runtime, deposit)
    csrf = csrf_of(client.get(deposit.path).text)
    client.post(
        f"{deposit.path}/reply", data={"reply": f"Hi from {deposit.name}", "csrf_token": csrf}
    )

    listed = client.get(BASE, headers=deposit.headers)
    assert listed.status_code == 200
    [row] = [i for i in listed.json()["items"] if i["id"] == str(deposit.item_id)]
    assert row["message_id"] == str(deposit.message_id) and row["replies"] == 1
    assert row["events"] is None

    one = client.get(f"{BASE}/{deposit.item_id}", headers=deposit.headers)
    assert one.status_code == 200
    body = one.json()
    kinds = [e["kind"] for e in body["events"]]
    assert kinds == ["deposited", "code_sent", "opened", "replied"]
    assert body["reply_list"][0]["length"] > 0 and body["reply_list"][0]["read_at"] is None
    for phi in (deposit.name, deposit.subject, deposit.address, deposit.filename):
        assert phi not in one.text and phi not in listed.text

    reader = make_api_key(deposit.tenant, scopes=["reports:read"])
    refused = client.post(f"{BASE}/{deposit.item_id}/recall", headers=reader)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    recalled = client.post(f"{BASE}/{deposit.item_id}/recall", headers=deposit.headers)
    assert recalled.status_code == 200
    assert recalled.json()["state"] == "recalled" and recalled.json()["recalled_at"]
    assert recalled.json()["events"][-1]["kind"] == "recalled"
    # The recipient's open session ends with it: 410, nothing shown.
    gone = client.get(deposit.path)
    assert gone.status_code == 410 and deposit.name not in gone.text
    again = client.post(f"{BASE}/{deposit.item_id}/recall", headers=deposit.headers)
    assert again.status_code == 200 and again.json()["state"] == "recalled"


def test_unknown_items_are_problem_details(client, deposit):
    missing = client.get(f"{BASE}/{uuid.uuid4()}", headers=deposit.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404


def test_console_shows_events_and_reads_replies_audited(
    client, runtime, deposit, make_user, sign_in
):
    from sqlalchemy import select

    from carepost.audit.models import AuditEvent

    sign_in_with_code(client, runtime, deposit)
    csrf = csrf_of(client.get(deposit.path).text)
    reply = f"Console reply of {deposit.name}"
    client.post(f"{deposit.path}/reply", data={"reply": reply, "csrf_token": csrf})
    user_id, _email, _password = make_user(deposit.tenant, role="marketer")
    headers = sign_in(deposit.tenant, user_id)
    page = client.get(f"/portal/messages/{deposit.message_id}", headers=headers)
    assert page.status_code == 200 and "Replied" in page.text and reply not in page.text
    listing = client.get("/portal", headers=headers)
    assert listing.status_code == 200 and str(deposit.message_id)[:8] in listing.text
    read = client.post(
        f"/portal/messages/{deposit.message_id}/reveal",
        data={"csrf_token": headers["X-CSRF-Token"]},
        headers=headers,
    )
    assert read.status_code == 200 and reply in read.text
    with runtime.bound_session(deposit.keys) as session:
        actions = list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.object_id == str(deposit.item_id))
            )
        )
    assert "portal.reply_view_phi" in actions
    recalled = client.post(
        f"/portal/messages/{deposit.message_id}/recall",
        data={"csrf_token": headers["X-CSRF-Token"]},
        headers=headers,
        follow_redirects=False,
    )
    assert recalled.status_code == 303
    assert recalled.headers["location"] == f"/portal/messages/{deposit.message_id}"
    after = client.get(recalled.headers["location"], headers=headers)
    assert 'id="portal-state">recalled' in after.text
    assert client.get(deposit.path).status_code == 410


def test_settings_change_the_notice_subject_expiry_and_branding(
    client, runtime, tenant, make_api_key
):
    from datetime import timedelta

    from carepost.portal.models import PortalItem
    from tests.portal.conftest import handoff, notices

    headers = make_api_key(tenant)
    default = client.get("/api/v1/portal/settings", headers=headers).json()
    assert default["effective_notice_subject"] == "You have a secure message from Test Clinic"
    assert default["expiry_days"] == 30
    bad = client.put(
        "/api/v1/portal/settings", json={"logo_url": "https://evil.example/x.png"}, headers=headers
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    saved = client.put(
        "/api/v1/portal/settings",
        json={
            "notice_subject": "Secure mail from your clinic",
            "expiry_days": 7,
            "brand_color": "#123456",
        },
        headers=headers,
    )
    assert (
        saved.status_code == 200
        and saved.json()["effective_notice_subject"] == "Secure mail from your clinic"
    )
    sent = client.post(
        "/api/v1/messages",
        json={
            "to": "someone@patients.example",
            "from": "care@clinic.example",
            "subject": "S",
            "text": "T",
        },
        headers=headers,
    )
    message_id = uuid.UUID(sent.json()["id"])
    item_id = handoff(runtime, tenant[1], message_id)
    [notice] = notices(runtime, tenant[1], item_id)
    assert notice.subject == "Secure mail from your clinic"
    with runtime.bound_session(tenant[1]) as session:
        item = session.get(PortalItem, item_id)
        assert item is not None
        assert item.expires_at - item.created_at == timedelta(days=7)
    path = notice.body["text"].split("/s/", 1)[1].split()[0]
    css = client.get(f"/s/{path}/brand.css")
    assert css.status_code == 200 and "#123456" in css.text
