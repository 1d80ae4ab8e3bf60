"""Hostile and broken input: each gets a clear answer and changes nothing it shouldn't.

SQL injection and markup in every text field of every JSON body are either
stored verbatim and returned as JSON (queries are parameterized; output is
never HTML) or refused with a 422 naming the field; never a 5xx, and nothing
but the addressed object changes. Malformed JSON, unknown fields, wrong types,
oversized bodies and bad query or path parameters get problem+json errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from carepost.accounts.models import ApiKey, User
from carepost.contacts.models import Contact
from carepost.tenancy.models import Tenant
from tests.security.conftest import Objects, TenantPair

V1 = "/api/v1"

SQL_INJECTION = [
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    "1; SELECT pg_sleep(5); --",
    '" OR ""="',
    "admin'--",
    "' UNION SELECT secret_hash, prefix FROM api_keys --",
    "o'brien'--@clinic.example",
    "%' AND 1=1 AND '%'='",
]
MARKUP = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    '"><svg/onload=alert(1)>',
    "javascript:alert(1)",
    "{{7*7}}${7*7}<%= 7*7 %>",
    '=HYPERLINK("http://evil.example")',
    "\u202etxt.exe",
]
# Characters no text field accepts (NUL breaks PostgreSQL, the rest logs and CSV).
CONTROL = ["a\x00b", "bell\x07", "esc\x1b[31m"]
HOSTILE = SQL_INJECTION + MARKUP


@dataclass(frozen=True)
class TextField:
    """A text field of a JSON body: where it lives and what a success must look like."""

    method: str
    path: str
    name: str
    base: Callable[[], dict[str, Any]] = dict
    target: str | None = None  # factory of the object the path addresses
    response_key: str | None = None  # where the object sits in the answer ("user")
    normalize: Callable[[str], str] = lambda value: value
    multi_line: bool = False
    as_list: bool = False  # the field is a list of strings (scopes)

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.name}"


def _fresh_email() -> dict[str, Any]:
    return {"email": f"u-{uuid.uuid4().hex[:8]}@clinic.example", "role": "analyst"}


def _unique_external_id() -> dict[str, Any]:
    return {"external_id": f"mrn-{uuid.uuid4().hex[:10]}"}


CONTACT_TEXT = ("email", "phone", "external_id", "first_name", "last_name", "birth_date")
FIELDS = [
    TextField(
        "POST",
        "/users",
        "email",
        lambda: {"role": "analyst"},
        response_key="user",
        normalize=str.lower,
    ),
    TextField("POST", "/users", "name", _fresh_email, response_key="user"),
    TextField("PATCH", "/users/{user_id}", "name", target="user"),
    TextField(
        "POST", "/api-keys", "name", lambda: {"scopes": ["contacts:read"]}, response_key="api_key"
    ),
    TextField(
        "POST", "/api-keys", "scopes", lambda: {"name": "k"}, response_key="api_key", as_list=True
    ),
    TextField("PATCH", "/tenant", "name"),
    TextField("PATCH", "/tenant", "physical_address", multi_line=True),
    *(
        TextField(
            "POST",
            "/contacts",
            name,
            dict if name == "external_id" else _unique_external_id,
            normalize=str.lower if name == "email" else (lambda v: v),
        )
        for name in CONTACT_TEXT
    ),
    *(
        TextField(
            "PATCH",
            "/contacts/{contact_id}",
            name,
            target="contact",
            normalize=str.lower if name == "email" else (lambda v: v),
        )
        for name in CONTACT_TEXT
    ),
    *(TextField("POST", "/contacts/lookup", name) for name in ("email", "phone", "external_id")),
]


@dataclass
class Scene:
    """A tenant with one object of each kind, an all-scopes key, and a way to read
    everything the tenant holds (to prove what a request did and did not change)."""

    runtime: Any
    client: Any
    tenant: TenantPair
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)

    def state(self) -> dict[tuple[str, str], Any]:
        tenant_row, keys = self.tenant
        with self.runtime.bound_session(keys) as session:
            rows: dict[tuple[str, str], Any] = {}
            for user in session.scalars(select(User).where(User.tenant_id == tenant_row.id)):
                rows["user", str(user.id)] = (user.email, user.name, user.role, user.status)
            for key in session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_row.id)):
                # last_used_at moves with every request the suite itself makes.
                rows["api_key", str(key.id)] = (key.name, key.scopes, key.revoked_at)
            for contact in session.scalars(
                select(Contact).where(Contact.tenant_id == tenant_row.id)
            ):
                rows["contact", str(contact.id)] = tuple(
                    getattr(contact, name) for name in CONTACT_TEXT
                )
            tenant = session.get(Tenant, tenant_row.id)
            rows["tenant", str(tenant_row.id)] = (
                tenant.name,
                tenant.session_idle_minutes,
                tenant.session_max_hours,
                tenant.physical_address,
            )
            return rows

    def url(self, path: str) -> str:
        return V1 + path.format(**self.params)


@pytest.fixture
def scene(runtime, client, make_tenant, make_api_key, objects: Objects) -> Scene:
    tenant = make_tenant()
    params: dict[str, str] = {}
    for target in (objects.user(tenant), objects.contact(tenant), objects.api_key(tenant)):
        params |= target.params
    return Scene(runtime, client, tenant, make_api_key(tenant), params)


def _changed(before: dict, after: dict) -> set[tuple[str, str]]:
    keys = set(before) | set(after)
    return {k for k in keys if before.get(k) != after.get(k)}


def _expected_change(spec: TextField, scene: Scene, response) -> set[tuple[str, str]]:
    if spec.path == "/tenant":
        return {("tenant", str(scene.tenant[0].id))}
    if spec.target is not None:
        return {(spec.target, scene.params[f"{spec.target}_id"])}
    if spec.path == "/contacts/lookup":
        return set()
    created = response.json()
    kind = spec.response_key or "contact"
    created = created[spec.response_key] if spec.response_key else created
    return {(kind, created["id"])}


def _returned_value(spec: TextField, response) -> Any:
    body = response.json()
    if spec.response_key:
        body = body[spec.response_key]
    return body[spec.name][0] if spec.as_list else body[spec.name]


def _assert_clear_refusal(spec: TextField, response, payload: str) -> None:
    assert response.headers["content-type"] == "application/problem+json"
    pointers = [error["pointer"] for error in response.json()["errors"]]
    assert any(
        p.rstrip("/0123456789").endswith("/" + spec.name) or p.endswith(f"/{spec.name}/0")
        for p in pointers
    ), (str(spec), pointers)
    if spec.path.startswith("/contacts"):
        # A contact's values are PHI: an error never repeats them.
        assert payload not in response.text


@pytest.mark.parametrize("spec", FIELDS, ids=str)
def test_hostile_text_is_stored_verbatim_or_refused_and_changes_nothing_else(scene, spec):
    payloads = HOSTILE + CONTROL + (["line one\nline two"] if spec.multi_line else [])
    for payload in payloads:
        body = spec.base() | {spec.name: [payload] if spec.as_list else payload}
        before = scene.state()
        response = scene.client.request(
            spec.method, scene.url(spec.path), json=body, headers=scene.headers
        )
        after = scene.state()
        label = f"{spec} <- {payload!r}"
        assert response.status_code in (200, 201, 422), f"{label}: {response.status_code}"
        assert response.headers["x-content-type-options"] == "nosniff"
        if response.status_code == 422:
            _assert_clear_refusal(spec, response, payload)
            assert after == before, f"{label}: refused but changed {_changed(before, after)}"
            continue
        assert payload not in CONTROL, f"{label}: control characters accepted"
        assert response.headers["content-type"] == "application/json"
        if spec.path == "/contacts/lookup":
            assert response.json() == {"items": []}
        else:
            assert _returned_value(spec, response) == spec.normalize(payload), label
        assert _changed(before, after) <= _expected_change(spec, scene, response), label


def test_a_lone_surrogate_is_refused(scene):
    headers = scene.headers | {"content-type": "application/json"}
    for method, path, body in (
        ("POST", "/contacts", b'{"first_name": "a\\ud800"}'),
        ("PATCH", "/tenant", b'{"physical_address": "x\\udfff"}'),
        ("POST", "/users", b'{"email": "s@clinic.example", "role": "analyst", "name": "\\ud83d"}'),
    ):
        before = scene.state()
        response = scene.client.request(method, scene.url(path), content=body, headers=headers)
        assert response.status_code == 422, path
        assert scene.state() == before


# --- malformed bodies -----------------------------------------------------------------

JSON_ENDPOINTS = [
    ("POST", "/users"),
    ("PATCH", "/users/{user_id}"),
    ("POST", "/api-keys"),
    ("PATCH", "/tenant"),
    ("POST", "/contacts"),
    ("PATCH", "/contacts/{contact_id}"),
    ("POST", "/contacts/lookup"),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path in JSON_ENDPOINTS]
MALFORMED = [
    b'{"name": ',
    b"{name: 1}",
    b"{'name': 'x'}",
    b'{"name": "x",}',
    b"\xff\xfe\x00",
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"42",
    b"[" * 100_000,  # deeper than any parser should recurse
    b'{"name": 1' + b"0" * 5000 + b"}",  # an integer too long to convert
    b'{"name": NaN}',
]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS, ids=ENDPOINT_IDS)
def test_malformed_json_is_a_clear_error(scene, method, path):
    headers = scene.headers | {"content-type": "application/json"}
    before = scene.state()
    for body in MALFORMED:
        response = scene.client.request(method, scene.url(path), content=body, headers=headers)
        assert response.status_code in (400, 422), (body[:20], response.status_code)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]
    assert scene.state() == before


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS, ids=ENDPOINT_IDS)
def test_unknown_fields_are_named(scene, method, path):
    before = scene.state()
    body = {"external_id": "x-1"} if "lookup" in path else {}
    body |= {"is_admin": True, "tenant_id": str(uuid.uuid4())}
    response = scene.client.request(method, scene.url(path), json=body, headers=scene.headers)
    assert response.status_code == 422
    pointers = {error["pointer"] for error in response.json()["errors"]}
    assert {"#/body/is_admin", "#/body/tenant_id"} <= pointers
    assert scene.state() == before


WRONG_TYPES: list[tuple[str, str, str, list[Any]]] = [
    ("POST", "/users", "email", [123, True, [], {}, None]),
    ("POST", "/users", "role", [1, "root", None, ["owner"]]),
    ("PATCH", "/users/{user_id}", "status", [False, "deleted", 0]),
    ("POST", "/api-keys", "scopes", ["contacts:read", [1], {}, [], None]),
    ("POST", "/api-keys", "expires_at", [1_900_000_000, "tomorrow", "2030-01-01T00:00:00", True]),
    ("PATCH", "/tenant", "session_idle_minutes", [True, "5", 5.5, 0, 100_000, [], -1]),
    ("PATCH", "/tenant", "session_max_hours", [False, "12", 12.5, 0, 10**30]),
    ("POST", "/contacts", "birth_date", [19610412, "12/04/1961", "1961-02-30", True, {}]),
    ("POST", "/contacts", "first_name", [42, ["a"], {"$ne": ""}, True]),
    ("PATCH", "/contacts/{contact_id}", "phone", [14155552671, ["+14155552671"], False]),
]


@pytest.mark.parametrize(
    ("method", "path", "name", "values"), WRONG_TYPES, ids=lambda v: str(v)[:30]
)
def test_wrong_types_are_refused_naming_the_field(scene, method, path, name, values):
    base: dict[str, Any] = {}
    if path == "/users":
        base = _fresh_email()
    elif path == "/api-keys":
        base = {"name": "k", "scopes": ["contacts:read"]}
    before = scene.state()
    for value in values:
        response = scene.client.request(
            method, scene.url(path), json=base | {name: value}, headers=scene.headers
        )
        assert response.status_code == 422, (name, value, response.status_code)
        pointers = [error["pointer"] for error in response.json()["errors"]]
        assert any(p.split("/")[-1] == name or f"/{name}/" in p for p in pointers), (
            name,
            value,
            pointers,
        )
    assert scene.state() == before


# --- size limits ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS, ids=ENDPOINT_IDS)
def test_oversized_bodies_are_refused_before_parsing(scene, settings, method, path):
    limit = settings.max_request_bytes
    body = b'{"name": "' + b"x" * (limit + 1) + b'"}'
    headers = scene.headers | {"content-type": "application/json"}
    before = scene.state()
    declared = scene.client.request(method, scene.url(path), content=body, headers=headers)

    def chunks():
        yield body[: limit // 2]
        yield body[limit // 2 :]

    streamed = scene.client.request(method, scene.url(path), content=chunks(), headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 413
    assert scene.state() == before


def test_long_values_are_refused_naming_the_field(scene):
    before = scene.state()
    for path, body, name in (
        ("/contacts", {"first_name": "x" * 201}, "first_name"),
        ("/contacts", {"email": "a" * 330 + "@example.org"}, "email"),
        ("/users", _fresh_email() | {"name": "n" * 201}, "name"),
        ("/api-keys", {"name": "k", "scopes": ["contacts:read"] * 51}, "scopes"),
    ):
        response = scene.client.post(scene.url(path), json=body, headers=scene.headers)
        assert response.status_code == 422, path
        assert response.json()["errors"][0]["pointer"].endswith(name)
    assert scene.state() == before


# --- query strings and paths ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/users", "/contacts"])
def test_bad_query_parameters_are_named(scene, path):
    for params, pointer in (
        ({"limit": "abc"}, "#/query/limit"),
        ({"limit": "0"}, "#/query/limit"),
        ({"limit": "-5"}, "#/query/limit"),
        ({"limit": "9" * 40}, "#/query/limit"),
        ({"cursor": "' OR 1=1 --"}, "#/query/cursor"),
        ({"cursor": "x" * 65}, "#/query/cursor"),
        ({"cursor": "AAAA"}, "#/query/cursor"),
    ):
        response = scene.client.get(scene.url(path), params=params, headers=scene.headers)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize(
    "path",
    ["/users/{}", "/api-keys/{}", "/contacts/{}"],
)
def test_ids_that_are_not_uuids_are_refused(scene, path):
    for bad in ("1' OR '1'='1", "../../etc/passwd", "<script>", "0", "%00"):
        response = scene.client.get(V1 + path.format(bad), headers=scene.headers)
        assert response.status_code in (404, 422), (bad, response.status_code)
        assert response.headers["content-type"] == "application/problem+json"


def test_a_body_sent_as_a_form_is_refused(scene):
    before = scene.state()
    response = scene.client.post(
        scene.url("/contacts"), data={"first_name": "Form"}, headers=scene.headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert scene.state() == before
