"""The console's frame: HTML error pages (while the API keeps problem+json), markup that
needs no inline script or style (strict CSP), landmarks, labels and navigation by role,
the dashboard, static assets, and the generic form and table helpers."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from carepost.audit.service import SYSTEM
from carepost.core.errors import (
    FieldError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from carepost.segments import service as segments
from carepost.templates import service as templates
from carepost.web import dashboard
from carepost.web.forms import Choice, Field, FormSpec
from carepost.web.tables import MASK, Column, Table
from tests.web.console_cases import PAGES
from tests.web.import_files import held_upload
from tests.web.people import make_contact_objects


class PageAudit(HTMLParser):
    """Collects what the CSP and accessibility checks need from one page."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.styles = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self.labels: set[str] = set()
        self.controls: list[tuple[str, str, bool]] = []  # (tag, id, has aria-label)
        self.landmarks: list[str] = []
        self.first_link: str | None = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and "src" not in attributes:
            self.inline_scripts += 1
        if tag == "style":
            self.styles += 1
        if "style" in attributes:
            self.style_attributes.append(tag)
        self.handlers += [name for name in attributes if name.startswith("on")]
        if tag == "label" and attributes.get("for"):
            self.labels.add(attributes["for"])
        if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.controls.append((tag, attributes.get("id", ""), "aria-label" in attributes))
        if tag in ("main", "nav", "header", "footer"):
            self.landmarks.append(tag)
        if tag == "a" and self.first_link is None:
            self.first_link = attributes.get("href")


def audit_page(text: str) -> PageAudit:
    parser = PageAudit()
    parser.feed(text)
    return parser


def test_console_errors_are_html_and_the_api_keeps_problem_json(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"
    assert api.json()["status"] == 404
    asked_for_json = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert asked_for_json.headers["content-type"] == "application/problem+json"
    wrong_method = client.get("/logout")
    assert wrong_method.status_code == 405
    assert "That action is not available here" in wrong_method.text


def test_unexpected_error_is_an_html_500_with_the_request_id(owner, sign_in, app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the database caught fire")

    monkeypatch.setattr(dashboard, "figures", broken)
    token = sign_in(owner).client.cookies.get("carepost_session")
    client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
    client.cookies.set("carepost_session", token)
    response = client.get("/")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert "Something went wrong on our side" in response.text
    assert re.search(r"Request id: <code>[0-9a-f]{16}</code>", response.text)
    assert "caught fire" not in response.text


def test_htmx_errors_arrive_as_alerts_in_the_message_area(make_person, tenant, sign_in):
    auditor = sign_in(make_person(tenant, "auditor"))
    response = auditor.post("/users", {"email": "x@clinic.example", "role": "analyst"}, htmx=True)
    assert response.status_code == 403
    assert response.headers["HX-Retarget"] == "#messages"
    assert 'role="alert"' in response.text and "<html" not in response.text


@pytest.mark.parametrize("case", [p for p in PAGES if not p.fragment], ids=lambda c: c.path)
def test_pages_need_no_inline_code_and_label_every_control(case, owner, sign_in, runtime):
    with runtime.bound_session(owner.keys) as session:
        contact, contact_list, field = make_contact_objects(session, (owner.tenant, owner.keys))
        segment = segments.create_segment(
            session,
            owner.tenant.id,
            name="On the list",
            description="",
            rule={"all": [{"list": str(contact_list.id)}, {"not": {"suppressed": "any"}}]},
            actor=SYSTEM,
        )
        template = templates.create_template(
            session,
            owner.tenant.id,
            name="Reminder",
            kind="transactional",
            subject="Your appointment",
            html="<p>Hello {{ contact.first_name | default('there') }}</p>",
            text=None,
            actor=SYSTEM,
        )
    path = (
        case.path.replace("{user_id}", str(owner.id))
        .replace("{contact_id}", str(contact.id))
        .replace("{list_id}", str(contact_list.id))
        .replace("{field_id}", str(field.id))
        .replace("{segment_id}", str(segment.id))
        .replace("{template_id}", str(template.id))
    )
    if "{endpoint_id}" in path:
        from carepost.webhooks import service as webhooks

        with runtime.bound_session(owner.keys) as session:
            endpoint = webhooks.create_endpoint(
                session,
                owner.tenant.id,
                url="https://hooks.example.org/carepost",
                event_types=["*"],
                actor=SYSTEM,
            ).endpoint
            webhooks.emit(session, owner.tenant.id, "message.opened", {"message_id": "m"})
        path = path.replace("{endpoint_id}", str(endpoint.id))
    if "{job_id}" in path:
        body = b"email,first_name\nann@clinic.example,Ann\n"
        path = path.replace("{job_id}", str(held_upload(runtime, (owner.tenant, owner.keys), body)))
    if "{domain_id}" in path:
        from carepost.domains import service as domains

        with runtime.bound_session(owner.keys) as session:
            name = f"d-{uuid.uuid4().hex[:8]}.example"
            domain = domains.add_domain(session, owner.tenant.id, name=name, actor=SYSTEM)
        path = path.replace("{domain_id}", str(domain.id))
    if "{campaign_id}" in path:
        from carepost.messages import campaigns
        from carepost.messages.schemas import CampaignIn

        body = {"name": "Flu", "list_id": str(contact_list.id), "from": "news@clinic.example"}
        with runtime.bound_session(owner.keys) as session:
            campaign = campaigns.create_campaign(
                session,
                owner.keys,
                CampaignIn.model_validate(body | {"subject": "Flu shots", "text": "Book now"}),
                actor=SYSTEM,
            )
            # The A/B outcome's panel too.
            campaign.ab_metric, campaign.ab_window_hours, campaign.ab_winner = "opens", 4, "a"
            campaign.ab_phase, campaign.ab_decided_at = "decided", campaign.created_at
            campaign.ab_results = [{"key": "a", "percent": 50, "delivered": 1, "opens": 1}]
        path = path.replace("{campaign_id}", str(campaign.id))
    if "{message_id}" in path:
        from tests.web.sent_messages import make_message

        message_id = make_message(runtime, (owner.tenant, owner.keys))
        path = path.replace("{message_id}", str(message_id))
    if "{workflow_id}" in path:
        from tests.web.workflow_objects import make_workflow

        tenant = (owner.tenant, owner.keys)
        workflow_id = make_workflow(runtime, tenant, template.id, contact.id)
        path = path.replace("{workflow_id}", str(workflow_id)).replace("{version}", "1")
    if "{gateway_client_id}" in path:
        from tests.web.test_console_generic import make_gateway_client

        client_id = make_gateway_client(runtime, (owner.tenant, owner.keys))
        path = path.replace("{gateway_client_id}", str(client_id))
    page = sign_in(owner).get(path)
    assert page.status_code == 200
    found = audit_page(page.text)
    assert found.inline_scripts == 0 and found.styles == 0
    assert found.style_attributes == [] and found.handlers == []
    assert found.first_link == "#main"  # the skip link comes first
    assert {"header", "nav", "main", "footer"} <= set(found.landmarks)
    unlabelled = [c for c in found.controls if c[1] not in found.labels and not c[2]]
    assert unlabelled == []


def test_sign_in_pages_need_no_inline_code(browser):
    found = audit_page(browser().get("/login").text)
    assert found.inline_scripts == 0 and found.styles == 0 and found.style_attributes == []
    assert found.first_link == "#main"


def test_htmx_is_configured_for_the_csp_and_sends_the_csrf_token(owner, sign_in):
    b = sign_in(owner)
    page = b.get("/")
    assert '"includeIndicatorStyles":false' in page.text
    assert '"allowEval":false' in page.text
    assert '"attributesToSettle":["class","width","height"]' in page.text  # never "style"
    assert f'hx-headers=\'{{"X-CSRF-Token": "{b.csrf}"}}\'' in page.text


def test_navigation_shows_only_permitted_sections(make_person, tenant, sign_in):
    analyst = sign_in(make_person(tenant, "analyst")).get("/")
    assert 'href="/settings"' in analyst.text
    for hidden in ('href="/users"', 'href="/api-keys"', 'href="/audit"'):
        assert hidden not in analyst.text
    assert 'aria-current="page">Dashboard' in analyst.text


def test_dashboard_shows_organization_role_mfa_and_counts(owner, make_person, tenant, sign_in):
    make_person(tenant, "analyst")
    page = sign_in(owner).get("/")
    assert owner.tenant.name in page.text
    assert "Active users" in page.text and "Active API keys" in page.text
    assert "Failed sign-in attempts" in page.text
    assert "1 user signs in without a second factor." in page.text
    assert "postal address" in page.text


def test_static_assets_are_served_by_carepost(client):
    for path, kind in (
        ("/static/console.css", "text/css"),
        ("/static/console.js", "javascript"),
        ("/static/htmx.min.js", "javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_console_pages_stay_out_of_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert not [p for p in paths if not p.startswith("/api/")]


# --- generic helpers --------------------------------------------------------------------

FORM = FormSpec(
    id="thing",
    fields=(
        Field("name", "Name", required=True, attrs={"maxlength": "5"}),
        Field("kind", "Kind", "select", choices=(Choice("a", "A"),)),
        Field("tags", "Tags", "checkboxes", choices=(Choice("x", "X"), Choice("y", "Y"))),
        Field("secret", "Secret", "password"),
    ),
)


def test_form_files_service_errors_under_their_fields():
    form = FORM.bind({"name": "abc", "tags": ["x", "y"], "secret": "hunter2"})
    assert form.value("name") == "abc" and form.selected("tags") == ["x", "y"]
    assert form.value("secret") == ""  # never echoed back
    form.failed(
        ValidationFailed(
            "bad",
            errors=[FieldError("#/body/name", "too odd"), FieldError("colour", "unknown")],
        )
    )
    assert form.errors == {"name": "too odd"}
    assert form.summary == ["unknown"]
    assert form.first_invalid == "name"


def test_form_reraises_errors_that_are_not_about_input():
    with pytest.raises(NotFound):
        FORM.bind({}).failed(NotFound("gone"))
    with pytest.raises(PermissionDenied):
        FORM.bind({}).failed(PermissionDenied("no"))
    named = FORM.bind({}).failed(PermissionDenied("not that kind", field="kind"))
    assert named.errors == {"kind": "not that kind"}


def test_form_checks_required_and_length_on_the_server():
    with pytest.raises(ValidationFailed) as raised:
        FORM.bind({"name": "toolong"}).validate()
    assert [e.field for e in raised.value.errors] == ["name"]
    with pytest.raises(ValidationFailed):
        FORM.bind({"name": " "}).validate()
    FORM.bind({"name": "ok"}).validate()


def test_tables_mask_phi_without_phi_read():
    class Row:
        name = "PhiNameSecret"
        id = 1

    table = Table("People", (Column("Name", lambda r: r.name, phi=True),), row_id=lambda r: r.id)
    hidden = table.cells(Row(), frozenset({"contacts:read"}))[0][1]
    assert hidden.text == MASK and "PhiNameSecret" not in hidden.text
    shown = table.cells(Row(), frozenset({"contacts:read", "phi:read"}))[0][1]
    assert shown.text == "PhiNameSecret"
    assert table.dom_id(Row()) == "table-1"
