"""Webhooks end to end: endpoints by the API, emit in a transaction, delivery by the
worker job to a real HTTP server on loopback, signatures verified as a receiver
would, retries with backoff, the delivery log, replay, rotation, and no PHI unless
the endpoint allows it."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.webhooks import rules, service
from carepost.webhooks.delivery import deliver_due, retry_delay
from carepost.webhooks.models import WebhookAttempt, WebhookDelivery
from carepost.webhooks.signing import HEADER, verify_signature
from tests.canaries import phi_value, secret_value
from tests.webhooks.receiver import running_receiver

V1 = "/api/v1/webhooks"


@pytest.fixture
def receiver():
    with running_receiver() as running:
        yield running


@pytest.fixture
def headers(tenant, make_api_key):
    return make_api_key(tenant)


def _create(client, headers, url, **extra):
    body = {"url": url, "event_types": ["message.bounced", "message.opened"], **extra}
    response = client.post(V1, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    secret_value(created["secret"])
    return created


def _emit(runtime, tenant, event_type="message.bounced", payload=None):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        return service.emit(session, tenant_row.id, event_type, payload or {"message_id": "m1"})


def _deliveries(runtime, tenant):
    with runtime.bound_session(tenant[1]) as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.tenant_id == tenant[0].id)
                .order_by(WebhookDelivery.id)
            )
        )


def _drain(runtime, tenant, **options):
    """Run the tenant's delivery rounds until nothing is due now."""
    total = 0
    for _ in range(20):
        count = deliver_due(runtime, tenant_id=tenant[0].id, **options)
        total += count
        if not count:
            break
    return total


def test_delivery_is_signed_and_verifies(client, runtime, tenant, headers, receiver):
    created = _create(client, headers, receiver.url)
    message_id = str(uuid.uuid4())
    assert _emit(runtime, tenant, "bounced", {"message_id": message_id, "kind": "hard"}) == 1
    assert _drain(runtime, tenant) == 1
    [request] = receiver.requests
    assert verify_signature(request.headers[HEADER], request.body, created["secret"])
    body = json.loads(request.body)
    assert body["type"] == "message.bounced"
    assert body["data"] == {"message_id": message_id, "kind": "hard"}
    assert body["organization_id"] == str(tenant[0].id)
    assert request.headers["Carepost-Event-Id"] == body["id"]
    [delivery] = _deliveries(runtime, tenant)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_signature_refuses_tampering_other_secrets_and_old_timestamps(
    client, runtime, tenant, headers, receiver
):
    created = _create(client, headers, receiver.url)
    _emit(runtime, tenant)
    _drain(runtime, tenant)
    [request] = receiver.requests
    signature = request.headers[HEADER]
    assert not verify_signature(signature, request.body + b" ", created["secret"])
    assert not verify_signature(signature, request.body, "whsec_other")
    timestamp = int(signature.split(",")[0][2:])
    assert not verify_signature(signature, request.body, created["secret"], now=timestamp + 301)
    assert verify_signature(signature, request.body, created["secret"], now=timestamp + 299)


def test_only_subscribed_enabled_endpoints_receive(client, runtime, tenant, headers, receiver):
    _create(client, headers, receiver.url, event_types=["message.opened"])
    disabled = _create(client, headers, receiver.url, event_types=["*"])
    client.patch(f"{V1}/{disabled['id']}", json={"enabled": False}, headers=headers)
    assert _emit(runtime, tenant, "message.bounced") == 0
    assert _emit(runtime, tenant, "message.opened") == 1


def test_payload_carries_no_phi_unless_the_endpoint_allows_it(
    client, runtime, tenant, headers, receiver
):
    plain = _create(client, headers, receiver.url)
    with_phi = _create(client, headers, receiver.url, include_phi=True)
    address = f"{phi_value('mail').lower()}@patients.example"
    subject = phi_value("subject")
    payload = {"message_id": "m1", "to": address, "phi": {"subject": subject}}
    assert _emit(runtime, tenant, "bounced", payload) == 2
    _drain(runtime, tenant)
    bodies = {r.headers["Carepost-Delivery"]: r.body for r in receiver.requests}
    by_endpoint = {str(d.endpoint_id): bodies[str(d.id)] for d in _deliveries(runtime, tenant)}
    assert address.encode() not in by_endpoint[plain["id"]]
    assert subject.encode() not in by_endpoint[plain["id"]]
    assert json.loads(by_endpoint[plain["id"]])["data"] == {"message_id": "m1"}
    data = json.loads(by_endpoint[with_phi["id"]])["data"]
    assert data["phi"] == {"to": address, "subject": subject}


def test_payloads_are_encrypted_at_rest(client, runtime, tenant, headers, receiver):
    _create(client, headers, receiver.url, include_phi=True)
    address = f"{phi_value('mail').lower()}@patients.example"
    _emit(runtime, tenant, "bounced", {"to": address})
    with runtime.database.engine.connect() as connection:
        raw = connection.exec_driver_sql("SELECT payload FROM webhook_deliveries").all()
    assert raw and all(address.encode() not in bytes(row[0]) for row in raw)


def test_failures_retry_with_backoff_then_fail(client, runtime, tenant, headers, receiver):
    _create(client, headers, receiver.url)
    receiver.statuses = [500] * 20
    receiver.answer_body = phi_value("errorpage").encode()
    _emit(runtime, tenant)
    rng = random.Random(7)
    assert deliver_due(runtime, tenant_id=tenant[0].id, rng=rng) == 1
    [delivery] = _deliveries(runtime, tenant)
    assert delivery.state == "pending" and delivery.attempts == 1
    wait = delivery.next_attempt_at - utcnow()
    assert timedelta(seconds=10) < wait <= timedelta(seconds=30)
    # Nothing is due before the backoff has passed.
    assert deliver_due(runtime, tenant_id=tenant[0].id) == 0
    attempts = 1
    while True:
        later = utcnow() + timedelta(hours=7)
        if not deliver_due(runtime, tenant_id=tenant[0].id, now=later, rng=rng):
            break
        attempts += 1
    [delivery] = _deliveries(runtime, tenant)
    assert delivery.state == "failed"
    assert attempts == delivery.attempts == runtime.settings.webhook_max_attempts
    assert len(receiver.requests) == attempts
    with runtime.bound_session(tenant[1]) as session:
        log = service.delivery_attempts(session, tenant[0].id, delivery.id)
    assert [a.attempt for a in log] == list(range(1, attempts + 1))
    assert all(a.status_code == 500 and a.error == "HTTP 500" for a in log)
    # The receiver's answer is never stored.
    assert all(receiver.answer_body.decode() not in (a.error or "") for a in log)


def test_backoff_grows_exponentially_with_jitter():
    rng = random.Random(1)
    delays = [retry_delay(n, rng).total_seconds() for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(6 * 3600, 30 * 2 ** (n - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    assert len({round(d, 3) for d in delays}) == len(delays)


def test_timeouts_and_refused_connections_are_logged_and_retried(
    client, runtime, tenant, headers, receiver
):
    _create(client, headers, receiver.url)
    receiver.delay_seconds = 1.0
    _emit(runtime, tenant)
    with httpx.Client(timeout=0.2) as impatient:
        deliver_due(runtime, tenant_id=tenant[0].id, client=impatient)
    [delivery] = _deliveries(runtime, tenant)
    assert (delivery.state, delivery.last_error, delivery.last_status_code) == (
        "pending",
        "timeout",
        None,
    )


def test_connection_refused_is_an_attempt(client, runtime, tenant, headers):
    with running_receiver() as gone:
        url = gone.url
    _create(client, headers, url)
    _emit(runtime, tenant)
    deliver_due(runtime, tenant_id=tenant[0].id)
    [delivery] = _deliveries(runtime, tenant)
    assert (delivery.state, delivery.last_error) == ("pending", "connection failed")


def test_delivery_log_and_replay_by_the_api(client, runtime, tenant, headers, receiver):
    created = _create(client, headers, receiver.url)
    receiver.statuses = [503]
    _emit(runtime, tenant)
    _drain(runtime, tenant)
    listed = client.get(f"{V1}/{created['id']}/deliveries", headers=headers).json()["items"]
    [first] = listed
    detail = client.get(f"{V1}/{created['id']}/deliveries/{first['id']}", headers=headers).json()
    assert detail["log"][0]["status_code"] == 503 and detail["log"][0]["error"] == "HTTP 503"
    assert "payload" not in detail
    replay = client.post(f"{V1}/{created['id']}/deliveries/{first['id']}/replay", headers=headers)
    assert replay.status_code == 202
    assert replay.json()["replay_of"] == first["id"]
    _drain(runtime, tenant)
    assert len(receiver.requests) == 2
    first_body, replay_body = (json.loads(r.body) for r in receiver.requests)
    assert first_body == replay_body  # the same event, signed afresh
    states = {
        d["id"]: d["state"]
        for d in client.get(f"{V1}/{created['id']}/deliveries", headers=headers).json()["items"]
    }
    assert states[replay.json()["id"]] == "delivered"


def test_test_event(client, runtime, tenant, headers, receiver):
    created = _create(client, headers, receiver.url, event_types=["message.clicked"])
    response = client.post(f"{V1}/{created['id']}/test", headers=headers)
    assert response.status_code == 202
    _drain(runtime, tenant)
    [request] = receiver.requests
    assert json.loads(request.body)["type"] == "webhook.test"
    assert verify_signature(request.headers[HEADER], request.body, created["secret"])


def test_secret_is_shown_once_and_rotation_keeps_the_old_one_for_a_while(
    client, runtime, tenant, headers, receiver
):
    created = _create(client, headers, receiver.url)
    shown = client.get(f"{V1}/{created['id']}", headers=headers).json()
    assert "secret" not in shown
    listed = client.get(V1, headers=headers).text
    assert created["secret"] not in listed
    rotated = client.post(f"{V1}/{created['id']}/rotate-secret", headers=headers).json()
    secret_value(rotated["secret"])
    assert rotated["secret"] != created["secret"]
    _emit(runtime, tenant)
    _drain(runtime, tenant)
    [request] = receiver.requests
    assert verify_signature(request.headers[HEADER], request.body, rotated["secret"])
    assert verify_signature(request.headers[HEADER], request.body, created["secret"])


def test_secrets_are_encrypted_at_rest(client, runtime, tenant, headers, receiver):
    created = _create(client, headers, receiver.url)
    with runtime.database.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT secret FROM webhook_endpoints").all()
    assert all(created["secret"].encode() not in bytes(row[0]) for row in rows)


@pytest.mark.parametrize(
    ("url", "loopback_ok", "accepted"),
    [
        ("https://hooks.example.org/carepost", False, True),
        ("http://hooks.example.org/carepost", False, False),
        ("http://hooks.example.org/carepost", True, False),
        ("http://127.0.0.1:9000/hooks", True, True),
        ("http://localhost:9000/hooks", True, True),
        ("http://127.0.0.1:9000/hooks", False, False),
        ("https://127.0.0.1/hooks", False, False),
        ("https://10.1.2.3/hooks", False, False),
        ("https://[::1]/hooks", False, False),
        ("https://user:pw@hooks.example.org/", False, False),
        ("ftp://hooks.example.org/", False, False),
        ("javascript:alert(1)", False, False),
    ],
)
def test_endpoint_urls(url, loopback_ok, accepted):
    if accepted:
        assert rules.check_url(url, allow_loopback_http=loopback_ok) == url
    else:
        with pytest.raises(ValidationFailed):
            rules.check_url(url, allow_loopback_http=loopback_ok)


def test_api_refuses_plain_http_to_other_hosts(client, headers):
    response = client.post(
        V1, json={"url": "http://hooks.example.org/x", "event_types": ["*"]}, headers=headers
    )
    assert response.status_code == 422


def test_unknown_event_types_are_refused(client, headers, receiver):
    response = client.post(
        V1, json={"url": receiver.url, "event_types": ["message.exploded"]}, headers=headers
    )
    assert response.status_code == 422


def test_emit_rolls_back_with_the_callers_transaction(client, runtime, tenant, headers, receiver):
    _create(client, headers, receiver.url)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), runtime.bound_session(tenant[1]) as session:
        service.emit(session, tenant[0].id, "bounced", {"message_id": "m1"})
        raise Abort
    assert _deliveries(runtime, tenant) == []


def test_a_deleted_endpoint_takes_its_log_along(client, runtime, tenant, headers, receiver):
    created = _create(client, headers, receiver.url)
    _emit(runtime, tenant)
    _drain(runtime, tenant)
    assert client.delete(f"{V1}/{created['id']}", headers=headers).status_code == 204
    assert _deliveries(runtime, tenant) == []
    with runtime.database.session() as session:
        assert (
            session.scalars(
                select(WebhookAttempt).where(WebhookAttempt.tenant_id == tenant[0].id)
            ).all()
            == []
        )


def test_the_documented_verification_snippet_works(client, runtime, tenant, headers, receiver):
    """docs/webhooks.md's Python recipe, run as a receiver would run it."""
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    snippet = docs.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)
    check = namespace["carepost_signature_ok"]
    created = _create(client, headers, receiver.url)
    _emit(runtime, tenant)
    _drain(runtime, tenant)
    [request] = receiver.requests
    signature = request.headers[HEADER]
    assert check(signature, request.body, created["secret"])
    assert not check(signature, request.body.replace(b"message", b"massage"), created["secret"])
    timestamp = int(signature.split(",")[0][2:])
    assert not check(signature, request.body, created["secret"], now=timestamp + 301)


def test_an_unreachable_endpoint_costs_one_try_per_round(client, runtime, tenant, headers):
    with running_receiver() as gone:
        url = gone.url
    _create(client, headers, url)
    for _ in range(3):
        _emit(runtime, tenant)
    assert deliver_due(runtime, tenant_id=tenant[0].id) == 3
    deliveries = _deliveries(runtime, tenant)
    assert {(d.state, d.attempts, d.last_error) for d in deliveries} == {
        ("pending", 1, "connection failed")
    }
