"""The public tracking routes: the pixel, the redirect (never an open one), machine
filtering and the per-organization setting."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.tracking import service
from carepost.tracking.links import click_token, open_token
from carepost.tracking.machines import machine_reason
from carepost.tracking.pages import PIXEL
from tests.canaries import phi_value
from tests.feedback_ledger import ledger_fixture

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Safari/605.1.15"
)


@pytest.fixture(scope="module")
def feedback_ledger(runtime):
    yield from ledger_fixture(runtime)


@pytest.fixture
def secret(runtime):
    return cached_feedback_secret(runtime.settings)


@pytest.fixture
def sent(runtime, tenant, feedback_ledger):
    """A message that left a minute ago."""
    address = f"{phi_value('mail').lower()}@patients.example"
    with runtime.bound_session(tenant[1]) as session:
        return feedback_ledger.add_message(
            session, tenant[1], to_address=address, sent_at=utcnow() - timedelta(minutes=1)
        )


def _events(runtime, tenant, ledger, message_id):
    with runtime.bound_session(tenant[1]) as session:
        return ledger.events(session, message_id)


def test_open_pixel_records_a_human_open(client, runtime, tenant, sent, secret, feedback_ledger):
    response = client.get(
        f"/t/o/{open_token(sent, secret=secret)}.gif", headers={"User-Agent": BROWSER}
    )
    assert response.status_code == 200 and response.content == PIXEL
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    assert _events(runtime, tenant, feedback_ledger, sent) == [("opened", {"machine": False})]


def test_apple_privacy_proxy_open_is_flagged(
    client, runtime, tenant, sent, secret, feedback_ledger
):
    client.get(f"/t/o/{open_token(sent, secret=secret)}", headers={"User-Agent": "Mozilla/5.0"})
    [(kind, detail)] = _events(runtime, tenant, feedback_ledger, sent)
    assert kind == "opened" and detail == {"machine": True, "machine_reason": "apple-privacy-proxy"}


def test_click_redirects_to_the_original_url(
    client, runtime, tenant, sent, secret, feedback_ledger
):
    url = "https://portal.clinic.example/visit?ref=mail"
    response = client.get(
        f"/t/c/{click_token(sent, 3, url, secret=secret)}",
        headers={"User-Agent": BROWSER},
        follow_redirects=False,
    )
    assert response.status_code == 302 and response.headers["location"] == url
    assert response.headers["referrer-policy"] == "no-referrer"
    assert _events(runtime, tenant, feedback_ledger, sent) == [
        ("clicked", {"machine": False, "link_index": 3})
    ]


def test_scanner_clicks_are_flagged(client, runtime, tenant, sent, secret, feedback_ledger):
    token = click_token(sent, 0, "https://clinic.example/", secret=secret)
    client.get(
        f"/t/c/{token}",
        headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"},
        follow_redirects=False,
    )
    [(_kind, detail)] = _events(runtime, tenant, feedback_ledger, sent)
    assert detail["machine"] is True and detail["machine_reason"] == "scanner-user-agent"


def test_clicks_right_after_sending_are_flagged(client, runtime, tenant, feedback_ledger, secret):
    with runtime.bound_session(tenant[1]) as session:
        fresh = feedback_ledger.add_message(session, tenant[1], to_address=None, sent_at=utcnow())
    token = click_token(fresh, 0, "https://clinic.example/", secret=secret)
    client.get(f"/t/c/{token}", headers={"User-Agent": BROWSER}, follow_redirects=False)
    [(_kind, detail)] = _events(runtime, tenant, feedback_ledger, fresh)
    assert detail["machine_reason"] == "too-fast"


@pytest.mark.parametrize("path", ["/t/c/{token}", "/t/o/{token}"])
def test_tampered_or_made_up_tokens_are_404(client, sent, secret, path):
    token = click_token(sent, 0, "https://clinic.example/", secret=secret)
    other = open_token(sent, secret=secret)
    for bad in (
        token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"),
        "x",
        "https%3A%2F%2Fevil.example",
        token if path.startswith("/t/o") else other,  # a token of the other kind
    ):
        response = client.get(path.format(token=bad), follow_redirects=False)
        assert response.status_code == 404 and "location" not in response.headers


def test_tracking_can_be_turned_off_per_organization(
    client, runtime, tenant, sent, secret, feedback_ledger
):
    with runtime.bound_session(tenant[1]) as session:
        service.update_tracking(
            session, tenant[0].id, track_opens=False, track_clicks=True, actor=SYSTEM
        )
    response = client.get(
        f"/t/o/{open_token(sent, secret=secret)}", headers={"User-Agent": BROWSER}
    )
    assert response.status_code == 200  # the recipient still gets the image
    assert _events(runtime, tenant, feedback_ledger, sent) == []
    token = click_token(sent, 0, "https://clinic.example/", secret=secret)
    client.get(f"/t/c/{token}", headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert [kind for kind, _ in _events(runtime, tenant, feedback_ledger, sent)] == ["clicked"]


def test_unknown_messages_still_get_the_pixel(client, secret, feedback_ledger):
    response = client.get(f"/t/o/{open_token(uuid.uuid4(), secret=secret)}")
    assert response.status_code == 200 and response.content == PIXEL


def test_tracking_settings_api(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    assert client.get("/api/v1/tracking/settings", headers=headers).json() == {
        "track_opens": True,
        "track_clicks": True,
    }
    changed = client.put(
        "/api/v1/tracking/settings",
        json={"track_opens": False, "track_clicks": True},
        headers=headers,
    )
    assert changed.status_code == 200
    assert client.get("/api/v1/tracking/settings", headers=headers).json()["track_opens"] is False


@pytest.mark.parametrize(
    ("agent", "ip", "kind", "seconds", "reason"),
    [
        (BROWSER, "203.0.113.5", "opened", 60, None),
        (BROWSER, "17.58.1.2", "opened", 60, "apple-privacy-proxy"),
        ("Mozilla/5.0", "203.0.113.5", "opened", 60, "apple-privacy-proxy"),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
            "(via ggpht.com GoogleImageProxy)",
            "66.102.8.1",
            "opened",
            60,
            None,
        ),
        ("python-requests/2.31", "203.0.113.5", "clicked", 600, "scanner-user-agent"),
        (BROWSER, "40.107.22.5", "clicked", 600, "scanner-network"),
        (BROWSER, "203.0.113.5", "clicked", 3, "too-fast"),
        (BROWSER, "203.0.113.5", "clicked", 30, None),
        ("", None, "opened", 60, "no-user-agent"),
    ],
)
def test_machine_decisions(agent, ip, kind, seconds, reason):
    now = utcnow()
    decided = machine_reason(
        kind=kind, user_agent=agent, client_ip=ip, sent_at=now - timedelta(seconds=seconds), now=now
    )
    assert decided == reason
