"""People and browsers for console tests: users with roles (and authenticators), and a
TestClient that behaves like a browser (keeps cookies, reads the page's CSRF token)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyotp
from fastapi.testclient import TestClient

from carepost.accounts import service as accounts
from carepost.accounts import sessions, totp
from carepost.accounts.permissions import MFA_REQUIRED_ROLES, Role
from carepost.audit.service import SYSTEM
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy.models import Tenant
from tests.canaries import secret_value

BASE_URL = "https://testserver"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Person:
    tenant: Tenant
    keys: TenantKeys
    id: uuid.UUID
    email: str
    password: str
    role: str
    totp_secret: str | None = None

    def totp(self, offset_steps: int = 0) -> str:
        """The authenticator's code now (or ``offset_steps`` 30-second steps away).

        Not registered as a log canary: six digits turn up by chance in any log (the
        microseconds of a timestamp), so only longer secrets are scanned for."""
        assert self.totp_secret
        return pyotp.TOTP(self.totp_secret).at(int(time.time()) + 30 * offset_steps)


@dataclass
class Browser:
    """A TestClient signed in as ``person`` (or not yet), with the page's CSRF token."""

    client: TestClient
    person: Person | None = None
    csrf: str = ""
    history: list[Any] = field(default_factory=list)

    def get(self, path: str, **kwargs: Any):
        response = self.client.get(path, follow_redirects=False, **kwargs)
        self._remember_csrf(response)
        return response

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        htmx: bool = False,
        csrf: bool = True,
        **kwargs: Any,
    ):
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        headers = dict(kwargs.pop("headers", {}))
        if htmx:
            headers["HX-Request"] = "true"
        response = self.client.post(
            path, data=form, headers=headers, follow_redirects=False, **kwargs
        )
        self._remember_csrf(response)
        return response

    def follow(self, response):
        """Follow one redirect (303) with a GET, as a browser does."""
        assert response.status_code in (302, 303), response.status_code
        return self.get(response.headers["location"])

    def _remember_csrf(self, response) -> None:
        if response.headers.get("content-type", "").startswith("text/html"):
            match = CSRF_INPUT.search(response.text)
            if match:
                self.csrf = match.group(1)


def create_person(
    runtime: Runtime,
    tenant: tuple[Tenant, TenantKeys],
    role: str = "owner",
    *,
    mfa: bool | None = None,
    one_time_password: bool = False,
    name: str = "",
) -> Person:
    """A user of ``tenant`` with ``role``; owners and admins get an authenticator."""
    tenant_row, keys = tenant
    email = f"{role}-{uuid.uuid4().hex[:8]}@clinic.example"
    password = None if one_time_password else secret_value(f"Pw-{uuid.uuid4().hex}")
    with_mfa = Role(role) in MFA_REQUIRED_ROLES if mfa is None else mfa
    with runtime.bound_session(keys) as session:
        user, one_time = accounts.create_user(
            session, tenant_id=tenant_row.id, email=email, role=role, name=name, password=password
        )
        secret = None
        if with_mfa:
            totp.begin_totp_enrolment(session, user=user, tenant=tenant_row)
            secret = secret_value(str(user.totp_secret))
            totp.confirm_totp_enrolment(
                session, user=user, code=pyotp.TOTP(secret).now(), actor=SYSTEM
            )
            # Let the current code be used once more by the test's own sign-in.
            user.totp_last_counter = (user.totp_last_counter or 0) - 2
        user_id = user.id
    return Person(
        tenant_row,
        keys,
        user_id,
        email,
        password or secret_value(one_time or ""),
        role,
        secret,
    )


def open_session(runtime: Runtime, app, person: Person) -> Browser:
    """A browser with a fully signed-in session of ``person``, made directly (tests about
    the sign-in form itself use the ``login`` fixture)."""
    with runtime.bound_session(person.keys) as session:
        user = accounts.get_user(session, person.tenant.id, person.id)
        token, row = sessions.create_session(
            session,
            user=user,
            tenant=person.tenant,
            stage=sessions.STAGE_MFA_OK,
            client_address="testclient",
            user_agent="pytest",
        )
        csrf = row.csrf_token
    secret_value(token)
    signed_in = Browser(TestClient(app, base_url=BASE_URL), person, csrf)
    signed_in.client.cookies.set("carepost_session", token)
    return signed_in


def make_contact_objects(session: Any, tenant: tuple[Tenant, TenantKeys]) -> tuple[Any, Any, Any]:
    """A contact (in a list), a list and a custom field of ``tenant``, for console pages
    that address them by id."""
    from carepost.contacts import custom_fields, lists
    from carepost.contacts import service as contacts

    tenant_row, keys = tenant
    contact = contacts.create_contact(session, keys, values={"first_name": "Generic"}, actor=SYSTEM)
    contact_list = lists.create_list(
        session, tenant_row.id, name=f"List {uuid.uuid4().hex[:6]}", description="", actor=SYSTEM
    )
    lists.change_members(
        session, tenant_row.id, contact_list.id, add=[contact.id], remove=[], actor=SYSTEM
    )
    field = custom_fields.create_field(
        session, tenant_row.id, key="conditions", label="Conditions", type="string", actor=SYSTEM
    )
    return contact, contact_list, field
