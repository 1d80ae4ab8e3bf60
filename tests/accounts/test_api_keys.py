"""API keys: shown once, stored hashed, refused when revoked or expired, last use recorded."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update

from carepost.accounts.models import ApiKey
from carepost.core.database import utcnow
from tests.conftest import secret_value

KEYS = "/api/v1/api-keys"


def create_key(client, headers, **extra):
    body = {"name": "EHR feed", "scopes": ["contacts:read"]} | extra
    response = client.post(KEYS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["api_key"], secret_value(created["secret"])


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def set_key(runtime, key_id, **values) -> None:
    with runtime.database.session() as session:
        session.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(**values))


def test_the_secret_is_shown_once(client, tenant, make_api_key):
    admin = make_api_key(tenant)
    key, secret = create_key(client, admin)
    assert secret.startswith("cp_" + key["prefix"] + "_")
    one = client.get(f"{KEYS}/{key['id']}", headers=admin)
    listed = client.get(KEYS, headers=admin)
    secret_part = secret.split("_", 2)[2]
    for response in (one, listed):
        assert response.status_code == 200
        assert secret_part not in response.text and "secret" not in response.json().__repr__()


def test_only_a_hash_of_the_secret_is_stored(runtime, client, tenant, make_api_key):
    key, secret = create_key(client, make_api_key(tenant))
    key_id = key["id"].replace("-", "") if runtime.database.is_sqlite else key["id"]
    with runtime.database.engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id})
            .mappings()
            .one()
        )
    secret_part = secret.split("_", 2)[2]
    assert secret_part not in repr(dict(row))
    assert row["secret_hash"] == hashlib.sha256(secret_part.encode()).hexdigest()


def test_a_key_works_until_revoked(client, tenant, make_api_key):
    admin = make_api_key(tenant)
    key, secret = create_key(client, admin)
    assert client.get("/api/v1/contacts", headers=bearer(secret)).status_code == 200
    assert client.delete(f"{KEYS}/{key['id']}", headers=admin).json()["revoked_at"]
    response = client.get("/api/v1/contacts", headers=bearer(secret))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_an_expired_key_is_refused(runtime, client, tenant, make_api_key):
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key, secret = create_key(client, make_api_key(tenant), expires_at=soon)
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 200
    set_key(runtime, key["id"], expires_at=utcnow() - timedelta(seconds=1))
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_an_expiry_in_the_past_is_refused_at_creation(client, tenant, make_api_key):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = client.post(
        KEYS,
        json={"name": "x", "scopes": ["contacts:read"], "expires_at": past},
        headers=make_api_key(tenant),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/expires_at"


def test_a_wrong_or_mangled_secret_is_refused(client, tenant, make_api_key):
    _key, secret = create_key(client, make_api_key(tenant))
    prefix = "_".join(secret.split("_", 2)[:2])
    for presented in (f"{prefix}_wrong", prefix, "cp_", "cp__", "not-a-key", secret + "x"):
        assert client.get("/api/v1/me", headers=bearer(presented)).status_code == 401, presented


def test_last_use_is_recorded_at_minute_granularity(runtime, client, tenant, make_api_key):
    admin = make_api_key(tenant)
    key, secret = create_key(client, admin)
    assert key["last_used_at"] is None
    client.get("/api/v1/me", headers=bearer(secret))
    first = client.get(f"{KEYS}/{key['id']}", headers=admin).json()["last_used_at"]
    assert first is not None
    client.get("/api/v1/me", headers=bearer(secret))
    assert client.get(f"{KEYS}/{key['id']}", headers=admin).json()["last_used_at"] == first
    set_key(runtime, key["id"], last_used_at=utcnow() - timedelta(minutes=2))
    client.get("/api/v1/me", headers=bearer(secret))
    later = client.get(f"{KEYS}/{key['id']}", headers=admin).json()["last_used_at"]
    assert datetime.fromisoformat(later) > datetime.now(UTC) - timedelta(seconds=30)


def test_a_key_of_a_suspended_organization_is_refused(runtime, client, tenant, make_api_key):
    from carepost.tenancy.models import Tenant

    headers = make_api_key(tenant)
    with runtime.database.session() as session:
        session.execute(update(Tenant).where(Tenant.id == tenant[0].id).values(status="suspended"))
    assert client.get("/api/v1/me", headers=headers).status_code == 401
