"""API keys in the console: list without secrets, create with scopes (secret shown once),
revoke via HTMX; nobody grants a scope their role lacks."""

from __future__ import annotations

import html
import json
import re

from carepost.accounts import apikeys


def create(b, name="EHR sync", scopes=("audit:read",)):
    return b.post("/api-keys", {"name": name, "scopes": list(scopes)}, htmx=True)


def test_create_shows_the_secret_once_and_it_works(owner, sign_in, client):
    b = sign_in(owner)
    response = create(b, scopes=("audit:read", "tenant:read"))
    assert response.status_code == 201
    secret = re.search(r'<code id="api-key-secret">([^<]+)</code>', response.text).group(1)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json()["permissions"] == ["audit:read", "tenant:read"]
    listing = b.get("/api-keys")
    assert secret not in listing.text
    prefix = secret.split("_")[1]
    assert f"cp_{prefix}_" in listing.text  # listed by its public prefix


def test_scope_choices_are_limited_to_the_creators_role(make_person, tenant, sign_in):
    admin = sign_in(make_person(tenant, "admin"))
    page = admin.get("/api-keys")
    assert 'value="audit:read"' in page.text
    assert 'value="keys:rotate"' not in page.text  # admins lack it
    refused = create(admin, scopes=("keys:rotate",))
    assert refused.status_code == 403
    assert 'id="apikey-scopes-error"' in refused.text
    assert "you cannot grant the scope" in html.unescape(refused.text).lower()


def test_create_needs_a_name_and_a_scope(owner, sign_in):
    b = sign_in(owner)
    no_scope = b.post("/api-keys", {"name": "x"}, htmx=True)
    assert no_scope.status_code == 422 and "Choose at least one scope." in no_scope.text
    no_name = create(b, name="  ")
    assert no_name.status_code == 422 and 'id="apikey-name-error"' in no_name.text
    unknown = create(b, scopes=("everything:please",))
    assert unknown.status_code == 422 and "Unknown scope" in html.unescape(unknown.text)


def test_revoke_via_htmx_returns_the_row_and_stops_the_key(owner, sign_in, client, runtime):
    b = sign_in(owner)
    secret = re.search(r'<code id="api-key-secret">([^<]+)</code>', create(b).text).group(1)
    with runtime.bound_session(owner.keys) as session:
        key = apikeys.list_api_keys(session, owner.tenant.id)[0]
    response = b.post(f"/api-keys/{key.id}/revoke", htmx=True)
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="apikey-{key.id}">')
    assert '<span class="badge badge--revoked">revoked</span>' in response.text
    assert "Revoked the API key" in json.loads(response.headers["HX-Trigger"])["carepost:notice"]
    denied = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert denied.status_code == 401


def test_revoke_without_htmx_comes_back_to_the_list(owner, sign_in, runtime):
    b = sign_in(owner)
    create(b)
    with runtime.bound_session(owner.keys) as session:
        key = apikeys.list_api_keys(session, owner.tenant.id)[0]
    response = b.post(f"/api-keys/{key.id}/revoke")
    assert response.headers["location"] == "/api-keys?done=revoked"
    assert "The API key was revoked." in b.follow(response).text


def test_auditor_reads_keys_but_cannot_create_or_revoke(make_person, tenant, sign_in):
    auditor = sign_in(make_person(tenant, "auditor"))
    page = auditor.get("/api-keys")
    assert page.status_code == 200
    assert "Create an API key" not in page.text and "Revoke" not in page.text
