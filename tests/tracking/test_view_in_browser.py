"""The view-in-browser link: every message gets a signed link with ids only (no
address, no PHI) that shows its stored content, refuses tampering, other tenants'
keys and expiry, runs no script; and the public routes are rate limited per client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from carepost.tracking import view
from carepost.tracking.limits import ClientRateLimiter
from tests.canaries import phi_value

V1 = "/api/v1"
LINK = re.compile(r"https://testserver(/t/v/[A-Za-z0-9_-]+)")


def _send(client, headers, **body) -> str:
    message = {
        "to": f"{phi_value('mail').lower()}@patients.example",
        "from": "care@clinic.example",
        "subject": "Your results",
    } | body
    response = client.post(f"{V1}/messages", json=message, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _stored_html(runtime, tenant, message_id: str) -> str:
    from carepost.messages.models import Message

    with runtime.bound_session(tenant[1]) as session:
        row = session.get(Message, uuid.UUID(message_id))
        assert row is not None
        return str(row.body["html"] or row.body["text"])


@pytest.fixture
def generous_limiter(app) -> Iterator[None]:
    """A limiter of its own for the test (the app is shared by the whole session)."""
    before = getattr(app.state, "public_limiter", None)
    app.state.public_limiter = ClientRateLimiter(10_000)
    yield
    app.state.public_limiter = before


def test_each_message_gets_a_working_view_link_without_phi(
    client, runtime, tenant, make_api_key, generous_limiter
):
    headers = make_api_key(tenant)
    name = phi_value("name")
    message_id = _send(
        client,
        headers,
        html=f"<p>Dear {name}</p><p><a href='{{{{ view_in_browser_url }}}}'>View online</a></p>"
        "<script>alert(1)</script>",
    )
    stored = _stored_html(runtime, tenant, message_id)
    [path] = LINK.findall(stored)
    assert "@" not in path and "patients" not in path and name not in path
    assert message_id not in path and message_id.replace("-", "") not in path

    page = client.get(path)
    assert page.status_code == 200
    assert name in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "sandbox" in policy
    assert page.headers["cache-control"].startswith("no-store")
    assert page.headers["referrer-policy"] == "no-referrer"

    # A second message gets another link; the two never show each other's content.
    other = _send(client, headers, text="Plain {{ view_in_browser_url }} only")
    [other_path] = LINK.findall(_stored_html(runtime, tenant, other))
    assert other_path != path
    plain = client.get(other_path)
    assert plain.status_code == 200 and "Plain" in plain.text and name not in plain.text


def test_tampered_foreign_and_expired_links_are_all_404(
    client, runtime, tenant, make_tenant, make_api_key, generous_limiter
):
    message_id = uuid.UUID(_send(client, make_api_key(tenant), text="Hi {{ view_in_browser_url }}"))
    token = view.view_token(tenant[1], message_id)
    assert client.get(f"/t/v/{token}").status_code == 200

    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    stranger = make_tenant()
    foreign = view.view_token(stranger[1], message_id)  # the right id, the wrong keys
    expired = view.view_token(tenant[1], message_id, now=datetime.now(UTC) - timedelta(days=91))
    unknown = view.view_token(tenant[1], uuid.uuid4())
    for bad in (flipped, foreign, expired, unknown, "x", "A" * 500):
        response = client.get(f"/t/v/{bad}")
        assert response.status_code == 404, bad
        assert response.text == "Not found"


def test_the_public_routes_are_rate_limited_per_client(app, client, runtime, tenant):
    before = getattr(app.state, "public_limiter", None)
    app.state.public_limiter = ClientRateLimiter(3)
    try:
        answers = [client.get(f"/t/o/nothing-{n}.gif").status_code for n in range(3)]
        assert answers == [404, 404, 404]  # counted even when the token is bad
        for path in ("/t/o/x.gif", "/t/c/x", "/t/v/x"):
            limited = client.get(path)
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
    finally:
        app.state.public_limiter = before


def test_the_limiter_refills_and_keeps_clients_apart():
    now = [0.0]
    limiter = ClientRateLimiter(60, max_clients=2, clock=lambda: now[0])
    assert all(limiter.allow("a") for _ in range(60))
    assert not limiter.allow("a")
    assert limiter.allow("b")
    now[0] += 1.0  # one more per second at 60/minute
    assert limiter.allow("a") and not limiter.allow("a")
    limiter.allow("c")  # a third client: the least recent one ("b") is forgotten
    assert set(limiter._buckets) == {"a", "c"}
    assert ClientRateLimiter(0).allow("anyone")


def test_the_link_lives_as_many_days_as_the_setting_says(runtime, tenant):
    """``web_copy_days`` sets the link's lifetime (here 7 days instead of 90)."""
    from carepost.audit.service import SYSTEM
    from carepost.messages.schemas import MessageIn
    from carepost.messages.sending import SendContext, SendLimits, send_messages

    settings = runtime.settings.model_copy(update={"web_copy_days": 7})
    limits = SendLimits.from_settings(settings)
    assert limits.web_copy_days == 7
    request = MessageIn.model_validate(
        {
            "to": "reader@patients.example",
            "from": "care@clinic.example",
            "subject": "Your newsletter",
            "text": "Read it online: {{ view_in_browser_url }}",
        }
    )
    with runtime.bound_session(tenant[1]) as session:
        [result] = send_messages(session, tenant[1], [(request, None)], SendContext(SYSTEM, limits))
    [path] = LINK.findall(_stored_html(runtime, tenant, str(result.id)))
    token = path.removeprefix(view.VIEW_PATH)
    now = datetime.now(UTC)
    assert view.verify(tenant[1], token, now=now + timedelta(days=6)) is not None
    assert view.verify(tenant[1], token, now=now + timedelta(days=8)) is None
