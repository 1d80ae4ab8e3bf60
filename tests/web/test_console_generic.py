"""Every console page and action, checked the same way (see console_cases.py): sign-in
required, permissions enforced per role with a 403 page, CSRF required, another
organization's objects not found — and every refusal changes nothing."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from carepost.accounts import apikeys
from carepost.accounts.models import WebAuthnCredential
from carepost.accounts.permissions import PERMISSIONS, Role, permissions_for
from carepost.audit.models import AuditHead
from carepost.audit.service import SYSTEM, chain_for
from carepost.domains import service as domains
from carepost.gateway.models import GatewayClient
from carepost.messages import campaigns
from carepost.messages.schemas import CampaignIn
from carepost.segments import service as segments
from carepost.templates import service as templates
from carepost.tenancy import service as tenancy
from carepost.webhooks import service as webhooks
from tests.web.console_cases import (
    ACTIONS,
    OBJECT_PLACEHOLDERS,
    PAGES,
    RECIPIENT_ROUTES,
    SIGN_IN_ROUTES,
    ActionCase,
    PageCase,
)
from tests.web.import_files import held_upload
from tests.web.people import create_person, make_contact_objects
from tests.web.sent_messages import make_message
from tests.web.workflow_objects import make_workflow

OPERATIONS = {"/healthz", "/readyz", "/metrics", "/docs/oauth2-redirect"}


def flat_routes(app) -> list:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI releases that flatten included routers themselves
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


@dataclass
class Organization:
    """A tenant with a signed-in person per role, a user to act on, an API key and a
    passkey of the owner."""

    tenant: tuple
    people: dict
    target_id: uuid.UUID
    key_id: uuid.UUID
    passkey_id: uuid.UUID
    contact_id: uuid.UUID
    list_id: uuid.UUID
    field_id: uuid.UUID
    job_id: uuid.UUID
    segment_id: uuid.UUID
    template_id: uuid.UUID
    endpoint_id: uuid.UUID
    delivery_id: uuid.UUID
    domain_id: uuid.UUID
    campaign_id: uuid.UUID
    message_id: uuid.UUID | None = None
    workflow_id: uuid.UUID | None = None
    gateway_client_id: uuid.UUID | None = None

    def fill(self, path: str) -> str:
        return (
            path.replace("{user_id}", str(self.target_id))
            .replace("{key_id}", str(self.key_id))
            .replace("{passkey_id}", str(self.passkey_id))
            .replace("{contact_id}", str(self.contact_id))
            .replace("{list_id}", str(self.list_id))
            .replace("{field_id}", str(self.field_id))
            .replace("{job_id}", str(self.job_id))
            .replace("{segment_id}", str(self.segment_id))
            .replace("{template_id}", str(self.template_id))
            .replace("{endpoint_id}", str(self.endpoint_id))
            .replace("{delivery_id}", str(self.delivery_id))
            .replace("{domain_id}", str(self.domain_id))
            .replace("{campaign_id}", str(self.campaign_id))
            .replace("{message_id}", str(self.message_id))
            .replace("{workflow_id}", str(self.workflow_id))
            .replace("{version}", "1")
            .replace("{gateway_client_id}", str(self.gateway_client_id))
            .replace("{reply_id}", "00000000-0000-4000-8000-000000000001")
            .replace("{index}", "0")
        )


def make_gateway_client(runtime, tenant) -> uuid.UUID:
    """A gateway client (AUTH only: no network, so no gateway test ever meets it)."""
    with runtime.bound_session(tenant[1]) as session:
        client = GatewayClient(
            tenant_id=tenant[0].id,
            name="Exchange",
            username=f"gw-{uuid.uuid4().hex[:12]}",
            secret_hash="not used by these tests",
            networks=[],
            cert_fingerprints=[],
            sender_domains=["lab.clinic.example"],
            max_message_bytes=1024 * 1024,
            max_recipients=10,
        )
        session.add(client)
        session.flush()
        return client.id


def _make_org(runtime) -> Organization:
    with runtime.database.session() as session:
        tenant = tenancy.create_tenant(
            session, runtime.keyring, slug=f"t-{uuid.uuid4().hex[:12]}", name="Generic Clinic"
        )
    people = {role.value: create_person(runtime, tenant, role.value) for role in Role}
    target = create_person(runtime, tenant, "analyst", mfa=True)
    with runtime.bound_session(tenant[1]) as session:
        key, _secret = apikeys.create_api_key(
            session,
            tenant_id=tenant[0].id,
            name="existing",
            scopes=["tenant:read"],
            creator_permissions=frozenset(PERMISSIONS),
            actor=SYSTEM,
        )
        passkey = WebAuthnCredential(
            tenant_id=tenant[0].id,
            user_id=people["owner"].id,
            credential_id=secrets.token_urlsafe(32),
            public_key=b"not checked by these tests",
            name="existing",
        )
        session.add(passkey)
        session.flush()
        contact, contact_list, field = make_contact_objects(session, tenant)
        segment = segments.create_segment(
            session,
            tenant[0].id,
            name="Everyone on the list",
            description="",
            rule={"list": str(contact_list.id)},
            actor=SYSTEM,
        )
        template = templates.create_template(
            session,
            tenant[0].id,
            name="Reminder",
            kind="transactional",
            subject="Your appointment",
            html="<p>Hello {{ contact.first_name | default('there') }}</p>",
            text=None,
            actor=SYSTEM,
        )
        endpoint = webhooks.create_endpoint(
            session,
            tenant[0].id,
            url="https://hooks.example.org/carepost",
            event_types=["*"],
            actor=SYSTEM,
        ).endpoint
        webhooks.emit(session, tenant[0].id, "message.opened", {"message_id": "m"})
        delivery = webhooks.list_deliveries(session, tenant[0].id, endpoint.id)[0]
        domain = domains.add_domain(session, tenant[0].id, name="lab.clinic.example", actor=SYSTEM)
        campaign = campaigns.create_campaign(
            session,
            tenant[1],
            CampaignIn.model_validate(
                {
                    "name": "Flu shots",
                    "list_id": str(contact_list.id),
                    "from": "news@clinic.example",
                    "subject": "Flu shots",
                    "text": "Book now",
                }
            ),
            actor=SYSTEM,
        )
    job_id = held_upload(runtime, tenant, b"email,first_name\nann@clinic.example,Ann\n")
    message_id = make_message(runtime, tenant)
    workflow_id = make_workflow(runtime, tenant, template.id, contact.id)
    gateway_client_id = make_gateway_client(runtime, tenant)
    return Organization(
        tenant,
        people,
        target.id,
        key.id,
        passkey.id,
        contact.id,
        contact_list.id,
        field.id,
        job_id,
        segment.id,
        template.id,
        endpoint.id,
        delivery.id,
        domain.id,
        campaign.id,
        message_id,
        workflow_id,
        gateway_client_id,
    )


# Every test here is about a refusal (or a page view), so they share two organizations:
# a test that changed anything would fail its own "nothing changed" check.
@pytest.fixture(scope="module")
def org(runtime) -> Organization:
    return _make_org(runtime)


@pytest.fixture(scope="module")
def stranger_org(runtime) -> Organization:
    return _make_org(runtime)


def audit_head(runtime, tenant) -> int:
    """The length of the organization's audit chain: every change appends to it."""
    with runtime.database.session() as session:
        return session.scalar(
            select(AuditHead.seq).where(AuditHead.chain == chain_for(tenant[0].id))
        )


def is_html(response) -> bool:
    return response.headers["content-type"].startswith("text/html")


def test_every_console_route_is_inventoried(app):
    known = {("GET", p.path) for p in PAGES} | {("POST", a.path) for a in ACTIONS}
    known |= SIGN_IN_ROUTES | RECIPIENT_ROUTES
    routes = set()
    for route in flat_routes(app):
        path = getattr(route, "path", "")
        if path.startswith(("/api/", "/static")) or path in OPERATIONS:
            continue
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                routes.add((method, path))
    assert routes == known, f"add these to tests/web/console_cases.py: {routes - known}"


@pytest.mark.parametrize("case", PAGES, ids=lambda c: c.path)
def test_pages_need_a_signed_in_person(case: PageCase, browser, org):
    response = browser().get(org.fill(case.path))
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


@pytest.mark.parametrize("case", ACTIONS, ids=lambda c: c.path)
def test_actions_need_a_signed_in_person(case: ActionCase, browser, org, runtime):
    before = audit_head(runtime, org.tenant)
    response = browser().post(org.fill(case.path), case.data, csrf=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert audit_head(runtime, org.tenant) == before


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_sees_exactly_its_pages(role, org, sign_in):
    person = sign_in(org.people[role])
    allowed = permissions_for(role)
    for case in PAGES:
        response = person.get(org.fill(case.path))
        expected = 200 if case.permission is None or case.permission in allowed else 403
        assert response.status_code == expected, (role, case.path)
        assert is_html(response)
        if expected == 403:
            assert "You don&#39;t have access to this" in response.text


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_is_refused_actions_beyond_its_permissions(role, org, sign_in, runtime):
    person = sign_in(org.people[role])
    allowed = permissions_for(role)
    refused = [a for a in ACTIONS if a.permission and a.permission not in allowed]
    for case in refused:
        before = audit_head(runtime, org.tenant)
        response = person.post(org.fill(case.path), case.data)
        assert response.status_code == 403, (role, case.path)
        assert is_html(response)
        assert audit_head(runtime, org.tenant) == before, (role, case.path)


@pytest.mark.parametrize("case", ACTIONS, ids=lambda c: c.path)
def test_posts_without_the_csrf_token_are_refused_and_change_nothing(case, org, sign_in, runtime):
    owner = sign_in(org.people["owner"])
    before = audit_head(runtime, org.tenant)
    response = owner.post(org.fill(case.path), case.data, csrf=False)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert audit_head(runtime, org.tenant) == before
    # A wrong token is no better than none.
    response = owner.post(org.fill(case.path), {**case.data, "csrf_token": "forged"}, csrf=False)
    assert response.status_code == 403
    assert audit_head(runtime, org.tenant) == before
    # ... and the session still works afterwards.
    assert owner.get("/").status_code == 200


@pytest.mark.parametrize("case", [p for p in PAGES if p.has_object], ids=lambda c: c.path)
def test_another_organizations_objects_are_not_found(case, org, stranger_org, sign_in):
    owner = sign_in(org.people["owner"])
    response = owner.get(stranger_org.fill(case.path))
    assert response.status_code == 404
    assert is_html(response) and "Page not found" in response.text
    malformed = case.path
    for placeholder in OBJECT_PLACEHOLDERS:
        malformed = malformed.replace(placeholder, "not-an-id")
    assert owner.get(malformed).status_code == 404


@pytest.mark.parametrize("case", [a for a in ACTIONS if a.has_object], ids=lambda c: c.path)
def test_another_organizations_objects_cannot_be_changed(case, org, stranger_org, sign_in, runtime):
    owner = sign_in(org.people["owner"])
    before = audit_head(runtime, stranger_org.tenant)
    response = owner.post(stranger_org.fill(case.path), case.data)
    assert response.status_code == 404
    assert audit_head(runtime, stranger_org.tenant) == before
    htmx = owner.post(stranger_org.fill(case.path), case.data, htmx=True)
    assert htmx.status_code == 404
    assert htmx.headers["HX-Retarget"] == "#messages"
    assert audit_head(runtime, stranger_org.tenant) == before
