"""The templates API: save-time checks (syntax, CAN-SPAM), versions, layouts, variants,
previews with PHI only for permitted roles (audited), and render_template itself."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from carepost.contacts import service as contacts
from carepost.core.errors import ValidationFailed
from carepost.templates import service as templates_service
from carepost.templates.context import ContactView, load_contact_view
from carepost.templates.rendering import render_template
from carepost.templates.sandbox import TemplateError
from carepost.tenancy import service as tenancy
from tests.conftest import phi_value
from tests.templates.test_sandbox import TEMPLATE_TEXT

V1 = "/api/v1"
ADDRESS = "100 Main Street\nSpringfield, IL 62701"
FOOTER = (
    '<p>{{ organization.physical_address }}</p><p><a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)


@pytest.fixture
def clinic(runtime, make_tenant):
    tenant = make_tenant()
    with runtime.bound_session(tenant[1]) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=tenant[0].id, actor=SYSTEM, physical_address=ADDRESS
        )
    return tenant


@pytest.fixture
def owner(clinic, make_api_key):
    return make_api_key(clinic)


def _template(**overrides):
    body = {
        "name": f"t-{uuid.uuid4().hex[:8]}",
        "kind": "transactional",
        "subject": "Your appointment, {{ contact.first_name | default('friend') }}",
        "html": "<p>Hello {{ contact.first_name }}</p>",
    }
    return body | overrides


def test_create_read_change_and_version(client, owner):
    created = client.post(f"{V1}/templates", json=_template(), headers=owner)
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    changed = client.patch(
        f"{V1}/templates/{template_id}",
        json={"html": "<p>Hi {{ contact.first_name }}</p>"},
        headers=owner,
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2
    versions = client.get(f"{V1}/templates/{template_id}/versions", headers=owner).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["html"] == "<p>Hello {{ contact.first_name }}</p>"
    listed = client.get(f"{V1}/templates", headers=owner).json()["items"]
    assert [t["id"] for t in listed] == [template_id]


def test_a_syntax_error_is_a_problem_with_its_line_and_field(client, owner):
    body = _template(html="<p>one</p>\n<p>two</p>\n{% if contact.first_name %}never closed")
    response = client.post(f"{V1}/templates", json=body, headers=owner)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/template-error")
    assert problem["line"] == "3"
    assert problem["errors"][0]["pointer"] == "#/body/html"


def test_marketing_needs_unsubscribe_and_address(client, owner):
    response = client.post(
        f"{V1}/templates", json=_template(kind="marketing", html="<p>Sale!</p>"), headers=owner
    )
    assert response.status_code == 422
    details = {e["detail"] for e in response.json()["errors"]}
    assert any("unsubscribe" in d for d in details)
    assert any("postal address" in d for d in details)
    assert {e["pointer"] for e in response.json()["errors"]} == {"#/body/html"}
    written_out = (
        "<p>Sale!</p><p>100 Main Street<br>Springfield, IL 62701</p>"
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
    )
    ok = client.post(
        f"{V1}/templates", json=_template(kind="marketing", html=written_out), headers=owner
    )
    assert ok.status_code == 201, ok.text


def test_marketing_without_an_organization_address_says_where_to_set_it(
    client, make_tenant, make_api_key
):
    headers = make_api_key(make_tenant())
    response = client.post(
        f"{V1}/templates", json=_template(kind="marketing", html=FOOTER), headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/kind"
    assert "Organization settings" in response.json()["detail"]


def test_a_layout_can_carry_the_footer_and_cannot_lose_it_later(client, owner):
    layout = client.post(
        f"{V1}/template-layouts",
        json={"name": "Brand", "html": "<header>Clinic</header>{{ content }}" + FOOTER},
        headers=owner,
    )
    assert layout.status_code == 201, layout.text
    layout_id = layout.json()["id"]
    body = _template(kind="marketing", html="<p>Flu shots are here</p>", layout_id=layout_id)
    created = client.post(f"{V1}/templates", json=body, headers=owner)
    assert created.status_code == 201, created.text
    broken = client.patch(
        f"{V1}/template-layouts/{layout_id}", json={"html": "{{ content }}"}, headers=owner
    )
    assert broken.status_code == 409
    preview = client.post(f"{V1}/templates/{created.json()['id']}/preview", json={}, headers=owner)
    assert preview.status_code == 200
    html = preview.json()["html"]
    assert html.startswith("<header>Clinic</header><p>Flu shots are here</p>")
    assert "Springfield" in html and "https://example.invalid/unsubscribe" in html
    assert "Flu shots are here" in preview.json()["text"]
    in_use = client.delete(f"{V1}/template-layouts/{layout_id}", headers=owner)
    assert in_use.status_code == 409


def test_a_layout_needs_content(client, owner):
    response = client.post(
        f"{V1}/template-layouts", json={"name": "Empty", "html": "<p>no body</p>"}, headers=owner
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/html"


def test_unknown_custom_fields_are_refused_at_save(client, owner):
    response = client.post(
        f"{V1}/templates", json=_template(html="{{ contact.custom.nope }}"), headers=owner
    )
    assert response.status_code == 422
    assert "contact.custom.nope" in response.json()["detail"]


def test_variants_split_at_most_100_percent(client, owner):
    template_id = client.post(f"{V1}/templates", json=_template(), headers=owner).json()["id"]
    path = f"{V1}/templates/{template_id}/variants"
    a = client.post(
        path, json={"key": "a", "subject": "A: {{ 1 + 1 }}", "percent": 60}, headers=owner
    )
    assert a.status_code == 201, a.text
    b = client.post(path, json={"key": "b", "from_name": "Dr. B", "percent": 50}, headers=owner)
    assert b.status_code == 422 and b.json()["errors"][0]["pointer"] == "#/body/percent"
    b = client.post(path, json={"key": "b", "from_name": "Dr. B", "percent": 40}, headers=owner)
    assert b.status_code == 201
    preview = client.post(
        f"{V1}/templates/{template_id}/preview", json={"variant": "a"}, headers=owner
    ).json()
    assert preview["subject"] == "A: 2" and preview["variant"] == "a"
    bad = client.post(path, json={"key": "c", "subject": "{{ oops", "percent": 0}, headers=owner)
    assert bad.status_code == 422 and bad.json()["type"].endswith("/template-error")
    assert bad.json()["errors"][0]["pointer"] == "#/body/subject"


def _patient(runtime, tenant):
    _tenant, keys = tenant
    first = phi_value("first")
    with runtime.bound_session(keys) as session:
        custom_fields.create_field(
            session, keys.tenant_id, key="a1c", label="A1c", type="number", actor=SYSTEM
        )
        contact = contacts.create_contact(
            session, keys, values={"first_name": first, "email": "p@example.org"}, actor=SYSTEM
        )
        contact_id = contact.id
    return contact_id, first


@pytest.mark.parametrize("role", ["marketer", "analyst"])
def test_preview_shows_phi_only_with_permission_and_audits_it(
    role, client, runtime, clinic, make_user, sign_in, audit_trail
):
    contact_id, first = _patient(runtime, clinic)
    headers = sign_in(clinic, make_user(clinic, role)[0])
    body = {
        "subject": "Hi {{ contact.first_name }}",
        "html": "<p>{{ contact.first_name }}, {{ contact.language | default('en') }}</p>",
        "contact_id": str(contact_id),
    }
    response = client.post(f"{V1}/templates/preview", json=body, headers=headers)
    assert response.status_code == 200, response.text
    views = audit_trail(clinic, "contact.view_phi")
    if role == "marketer":
        assert response.json()["phi_shown"] is True and first in response.text
        assert [e.details["via"] for e in views] == ["template_preview"]
    else:
        assert response.json()["masked"] is True
        assert first not in response.text and "[first_name]" in response.text
        assert views == []


def test_render_template_for_the_outbox(runtime, clinic, client, owner):
    contact_id, first = _patient(runtime, clinic)
    body = _template(
        subject="Results for {{ contact.first_name }}",
        html="<p>A1c {{ contact.custom.a1c | default('pending') }} {{ ref }}</p>",
    )
    template_id = uuid.UUID(client.post(f"{V1}/templates", json=body, headers=owner).json()["id"])
    with runtime.bound_session(clinic[1]) as session:
        view = load_contact_view(session, clinic[1], contact_id)
        message = render_template(
            session, clinic[1], template_id, contact=view, data={"ref": "R-1"}
        )
        with pytest.raises(TemplateError) as missing:
            render_template(session, clinic[1], template_id, contact=view, data={})
    assert message.subject == f"Results for {first}"
    assert message.html == "<p>A1c pending R-1</p>"
    assert message.text == "A1c pending R-1\n"
    assert message.uses_phi is True and message.template_id == template_id
    assert message.variant is None
    assert missing.value.variable == "ref"


def test_uses_phi_follows_the_field_definitions(runtime, clinic, client, owner):
    with runtime.bound_session(clinic[1]) as session:
        custom_fields.create_field(
            session,
            clinic[0].id,
            key="plan",
            label="Plan",
            type="string",
            phi=False,
            actor=SYSTEM,
        )
    template_id = client.post(
        f"{V1}/templates",
        json=_template(subject="Hi", html="{{ contact.custom.plan | default('') }}"),
        headers=owner,
    ).json()["id"]
    with runtime.bound_session(clinic[1]) as session:
        message = render_template(
            session, clinic[1], uuid.UUID(template_id), contact=ContactView(), data={}
        )
    assert message.uses_phi is False


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(source=TEMPLATE_TEXT, kind=st.sampled_from(["transactional", "marketing"]))
def test_saving_and_rendering_any_text_fails_only_with_a_clear_error(runtime, clinic, source, kind):
    """On the database under test (SQLite or PostgreSQL): any text saved as a template
    is either stored and renders (or fails to render) with a TemplateError, or is
    refused with a domain error; nothing else escapes."""
    keys = clinic[1]
    try:
        with runtime.bound_session(keys) as session:
            row = templates_service.create_template(
                session,
                keys.tenant_id,
                name=f"h-{uuid.uuid4().hex[:10]}",
                kind=kind,
                subject="Hi",
                html=source or None,
                text=None if source else "x",
                actor=SYSTEM,
            )
            template_id = row.id
    except (TemplateError, ValidationFailed) as refused:
        assert refused.status == 422
        return
    with runtime.bound_session(keys) as session:
        try:
            render_template(session, keys, template_id, contact=ContactView(), data={})
        except TemplateError as error:
            assert error.code == "template-error"
