"""The API's contract: problem+json errors naming the field, auth, limits, health, metrics."""

from __future__ import annotations

import uuid


def test_health_and_readiness(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_unauthenticated_request_gets_problem_json(client):
    response = client.get("/api/v1/users")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/unauthenticated") and body["status"] == 401


def test_unknown_field_is_named(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    response = client.post(
        "/api/v1/users",
        json={"email": "a@b.example", "role": "analyst", "colour": "red"},
        headers=headers,
    )
    assert response.status_code == 422
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert "#/body/colour" in pointers


def test_malformed_json_is_a_clear_error(client, tenant, make_api_key):
    headers = make_api_key(tenant) | {"content-type": "application/json"}
    response = client.post("/api/v1/users", content=b'{"email": ', headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_oversized_body_is_rejected(client, tenant, make_api_key, settings):
    headers = make_api_key(tenant) | {"content-type": "application/json"}
    body = b'{"name": "' + b"x" * (settings.max_request_bytes + 10) + b'"}'
    response = client.post("/api/v1/api-keys", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["status"] == 413


def test_domain_error_names_the_field(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    response = client.post(
        "/api/v1/users", json={"email": "not-an-address", "role": "analyst"}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/email"


def test_metrics_are_exposed(client):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "carepost_http_requests_total" in text


def test_security_headers(client):
    response = client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-request-id"]


def test_api_key_scopes_limit_access(client, tenant, make_api_key):
    headers = make_api_key(tenant, ["audit:read"])
    assert client.get("/api/v1/users", headers=headers).status_code == 403
    me = client.get("/api/v1/me", headers=headers).json()
    assert me["permissions"] == ["audit:read"]


def test_revoked_api_key_stops_working(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    key_id = client.get("/api/v1/me", headers=headers).json()["api_key_id"]
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=headers).status_code == 200
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_users_pagination_by_cursor(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    for n in range(5):
        assert (
            client.post(
                "/api/v1/users",
                json={"email": f"u{n}@clinic.example", "role": "analyst"},
                headers=headers,
            ).status_code
            == 201
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/users", params=params, headers=headers).json()
        seen += [u["email"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"u{n}@clinic.example" for n in range(5)]
    bad = client.get("/api/v1/users", params={"cursor": "!!!"}, headers=headers)
    assert bad.status_code == 422


def test_a_passkey_counts_as_a_second_factor_in_the_user_list(
    client, runtime, tenant, make_api_key
):
    from carepost.accounts.models import WebAuthnCredential

    headers = make_api_key(tenant)
    created = client.post(
        "/api/v1/users",
        json={"email": "passkey@clinic.example", "role": "analyst"},
        headers=headers,
    ).json()["user"]
    assert created["mfa_enabled"] is False
    with runtime.bound_session(tenant[1]) as session:
        session.add(
            WebAuthnCredential(
                tenant_id=tenant[0].id,
                user_id=uuid.UUID(created["id"]),
                credential_id="cred-test",
                public_key=b"\x00",
                sign_count=0,
                transports=[],
                name="laptop",
            )
        )
    one = client.get(f"/api/v1/users/{created['id']}", headers=headers).json()
    listed = client.get("/api/v1/users", headers=headers).json()["items"]
    assert one["mfa_enabled"] is True
    assert next(u for u in listed if u["id"] == created["id"])["mfa_enabled"] is True
