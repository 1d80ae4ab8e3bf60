"""Fixtures for console tests: people with roles, browsers signed in as them, and the
real sign-in form for tests about signing in (see people.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy.models import Tenant
from tests.web.people import BASE_URL, Browser, Person, create_person, open_session


@pytest.fixture
def browser(app) -> Callable[[], Browser]:
    """A fresh browser (its own cookie jar), signed in as nobody."""

    def make() -> Browser:
        return Browser(TestClient(app, base_url=BASE_URL))

    return make


@pytest.fixture
def make_person(runtime: Runtime) -> Callable[..., Person]:
    def make(tenant: tuple[Tenant, TenantKeys], role: str = "owner", **options: Any) -> Person:
        return create_person(runtime, tenant, role, **options)

    return make


@pytest.fixture
def sign_in(runtime: Runtime, app) -> Callable[[Person], Browser]:
    def make(person: Person) -> Browser:
        return open_session(runtime, app, person)

    return make


@pytest.fixture
def login(browser) -> Callable[..., tuple[Browser, Any]]:
    """Sign in through the real form; returns the browser (having followed the redirect,
    so it holds the next form's CSRF token) and the answer to the post."""

    def submit(
        person: Person,
        *,
        password: str | None = None,
        organization: str | None = None,
        email: str | None = None,
        b: Browser | None = None,
    ):
        b = b or browser()
        b.person = person
        page = b.get("/login")
        assert page.status_code == 200
        response = b.post(
            "/login",
            {
                "organization": organization if organization is not None else person.tenant.slug,
                "email": email if email is not None else person.email,
                "password": password if password is not None else person.password,
            },
        )
        if response.status_code == 303:
            b.get(response.headers["location"])  # as a browser does: loads the next form
        return b, response

    return submit


@pytest.fixture
def owner(tenant, make_person) -> Person:
    return make_person(tenant, "owner")


@pytest.fixture
def other_tenant(make_tenant):
    return make_tenant("Other Clinic")
