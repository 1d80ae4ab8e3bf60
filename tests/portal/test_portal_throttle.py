"""The per-client-address throttle across a tenant's items: code requests and wrong
codes, passwords and answers from one address are counted in a window; past the limit
every attempt (on any item, even with the right code) answers 429 with a clear page,
and a ``client_throttled`` event and audit entry are written. Events keep only a keyed
hash of the address."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, text, update

from carepost.audit.models import AuditEvent
from carepost.core.database import utcnow
from carepost.portal import service
from carepost.portal.models import PortalEvent
from tests.portal.conftest import LINK, csrf_of, handoff, latest_code, notices


def _second_item(client, runtime, deposit) -> tuple[uuid.UUID, str]:
    response = client.post(
        "/api/v1/messages",
        json={
            "to": deposit.address,
            "from": "care@clinic.example",
            "subject": "Second result",
            "text": "Another result.",
            "purpose": "transactional",
        },
        headers=deposit.headers,
    )
    assert response.status_code == 201, response.text
    item_id = handoff(runtime, deposit.keys, uuid.UUID(response.json()["id"]))
    [notice] = notices(runtime, deposit.keys, item_id)
    [path] = LINK.findall(notice.body["text"])
    return item_id, path


def _kinds(runtime, keys, item_id) -> list[str]:
    with runtime.bound_session(keys) as session:
        return list(
            session.scalars(
                select(PortalEvent.kind)
                .where(PortalEvent.item_id == item_id)
                .order_by(PortalEvent.id)
            )
        )


def test_one_address_is_throttled_across_items(client, runtime, deposit, monkeypatch):
    monkeypatch.setattr(service, "CLIENT_MAX_ATTEMPTS", 4)
    other_id, other = _second_item(client, runtime, deposit)
    csrf = csrf_of(client.get(deposit.path).text)
    assert client.post(f"{deposit.path}/code", data={"csrf_token": csrf}).status_code == 200
    for _ in range(2):
        wrong = client.post(f"{deposit.path}/verify", data={"code": "000000", "csrf_token": csrf})
        assert wrong.status_code == 400
    other_csrf = csrf_of(client.get(other).text)
    assert client.post(f"{other}/code", data={"csrf_token": other_csrf}).status_code == 200
    # Four attempts from this address (two items, neither locked): the fifth is refused,
    # even with the right code, and no new code is sent.
    right = latest_code(runtime, deposit.keys, other_id)
    refused = client.post(f"{other}/verify", data={"code": right, "csrf_token": other_csrf})
    assert refused.status_code == 429
    assert "Too many attempts were made from your network" in refused.text
    assert 'role="alert"' in refused.text and deposit.name not in refused.text
    sent = len(notices(runtime, deposit.keys, deposit.item_id))
    again = client.post(f"{deposit.path}/code", data={"csrf_token": csrf})
    assert again.status_code == 429 and "from your network" in again.text
    assert len(notices(runtime, deposit.keys, deposit.item_id)) == sent
    assert _kinds(runtime, deposit.keys, other_id)[-1] == "client_throttled"
    assert _kinds(runtime, deposit.keys, deposit.item_id)[-1] == "client_throttled"
    with runtime.bound_session(deposit.keys) as session:
        actions = list(
            session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == str(other_id)))
        )
        assert "portal.client_throttled" in actions
        # The events hold a keyed hash of the address, never the address.
        hashes = set(
            session.scalars(
                select(PortalEvent.client_hash).where(
                    PortalEvent.item_id.in_([deposit.item_id, other_id]),
                    PortalEvent.kind != "deposited",
                )
            )
        )
        assert len(hashes) == 1 and None not in hashes
        [hashed] = hashes
        assert len(hashed) == 40 and "testclient" not in hashed
        rows = session.execute(text("SELECT * FROM portal_events")).all()
        assert not any("testclient" in str(value) for row in rows for value in row)
        # Once the window has moved on, the right code works.
        session.execute(
            update(PortalEvent)
            .where(PortalEvent.client_hash == hashed)
            .values(occurred_at=utcnow() - service.CLIENT_WINDOW - timedelta(minutes=1))
        )
    opened = client.post(f"{other}/verify", data={"code": right, "csrf_token": other_csrf})
    assert opened.status_code == 200 and "Second result" in opened.text


def test_the_address_hash_is_keyed_and_distinct(runtime, deposit):
    """Each address has its own keyed hash; no address, no hash (nothing counted)."""
    with runtime.bound_session(deposit.keys):
        assert service.client_hash("192.0.2.1") != service.client_hash("192.0.2.2")
        assert service.client_hash("") is None
