"""The templates editor in the console: the live preview fragment (sandboxed frame,
faults with their line), saving with save-time checks shown at their fields, versions,
PHI in previews only for permitted roles (audited), and read-only for analysts."""

from __future__ import annotations

import html
import re

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from carepost.templates import service as templates
from carepost.tenancy import service as tenancy
from tests.canaries import phi_value

FORM = {
    "name": "Reminder",
    "kind": "transactional",
    "subject": "Hi {{ contact.first_name }}",
    "html": "<p>Hello <b>{{ contact.first_name }}</b></p>",
    "text": "",
    "layout_id": "",
    "contact_id": "",
    "data": "",
}


def srcdoc(page: str) -> str:
    found = re.search(r'srcdoc="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


def test_the_live_preview_renders_the_draft_in_a_sandboxed_frame(owner, sign_in):
    b = sign_in(owner)
    answer = b.post("/templates/render", FORM, htmx=True)
    assert answer.status_code == 200
    assert "<html" not in answer.text  # a fragment
    assert 'sandbox=""' in answer.text
    assert srcdoc(answer.text) == "<p>Hello <b>Alex</b></p>"
    assert 'id="preview-subject">Hi Alex<' in answer.text
    assert "Hello Alex" in answer.text  # the generated text part


def test_a_syntax_error_shows_its_line(owner, sign_in):
    b = sign_in(owner)
    form = FORM | {"html": "<p>one</p>\n<p>two</p>\n{% for x in %}"}
    answer = b.post("/templates/render", form, htmx=True)
    assert "line 3" in answer.text and "preview-faults" in answer.text
    unknown = b.post("/templates/render", FORM | {"html": "\n{{ appointment.when }}"}, htmx=True)
    assert "Appointment is undefined" in unknown.text and "line 2" in unknown.text


def test_template_html_cannot_reach_the_console(owner, sign_in):
    b = sign_in(owner)
    form = FORM | {"html": '<script>parent.document.body.remove()</script>"><img src=x>'}
    answer = b.post("/templates/render", form, htmx=True)
    # Only inside the escaped srcdoc attribute of a frame without allow-scripts.
    assert "<script>" not in answer.text
    assert "<script>" in srcdoc(answer.text)


def test_save_create_and_update_keep_versions(owner, sign_in, runtime):
    b = sign_in(owner)
    created = b.post("/templates", FORM)
    assert created.status_code == 303
    location = created.headers["location"]
    assert location.endswith("?done=created")
    page = b.get(location)
    assert "Template saved." in page.text and "Version 1" in page.text
    path = location.split("?")[0]
    updated = b.post(path, FORM | {"subject": "Hello {{ contact.first_name }}"})
    assert updated.status_code == 303
    assert "Version 2" in b.get(path).text


def test_a_refused_save_shows_each_fault_at_its_field_and_changes_nothing(owner, sign_in, runtime):
    b = sign_in(owner)
    with runtime.bound_session(owner.keys) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=owner.tenant.id, actor=SYSTEM, physical_address="1 Main St"
        )
    marketing = b.post("/templates", FORM | {"kind": "marketing"})
    assert marketing.status_code == 422
    assert "unsubscribe" in marketing.text and 'aria-invalid="true"' in marketing.text
    broken = b.post("/templates", FORM | {"html": "<p>\n{{ contact.first_name }"})
    assert broken.status_code == 422 and "line 2" in broken.text
    with runtime.bound_session(owner.keys) as session:
        assert templates.list_templates(session, owner.tenant.id) == []


def test_previews_show_phi_only_to_phi_readers_and_audit_them(
    owner, make_person, sign_in, runtime, audit_trail
):
    first = phi_value("first")
    with runtime.bound_session(owner.keys) as session:
        contact = contacts.create_contact(
            session, owner.keys, values={"first_name": first}, actor=SYSTEM
        )
        contact_id = str(contact.id)
    tenant = (owner.tenant, owner.keys)
    form = FORM | {"contact_id": contact_id}
    analyst = sign_in(make_person(tenant, "analyst"))
    masked = analyst.post("/templates/render", form, htmx=True)
    assert first not in masked.text and "[first_name]" in srcdoc(masked.text)
    assert audit_trail(tenant, "contact.view_phi") == []
    marketer = sign_in(make_person(tenant, "marketer"))
    shown = marketer.post("/templates/render", form, htmx=True)
    assert first in srcdoc(shown.text) and "PHI shown" in shown.text
    [event] = audit_trail(tenant, "contact.view_phi")
    assert event.details["via"] == "template_preview"


def test_analysts_read_templates_but_cannot_save(owner, make_person, sign_in, runtime):
    with runtime.bound_session(owner.keys) as session:
        row = templates.create_template(
            session,
            owner.tenant.id,
            name="Welcome",
            kind="transactional",
            subject="Hi",
            html="<p>Hello</p>",
            text=None,
            actor=SYSTEM,
        )
    analyst = sign_in(make_person((owner.tenant, owner.keys), "analyst"))
    page = analyst.get(f"/templates/{row.id}")
    assert page.status_code == 200 and "save-template" not in page.text
    assert analyst.post(f"/templates/{row.id}", FORM).status_code == 403


def test_without_javascript_the_preview_button_returns_the_editor(owner, sign_in):
    b = sign_in(owner)
    page = b.post("/templates/render", FORM | {"target": "/templates"})
    assert page.status_code == 200
    assert "<html" in page.text and 'action="/templates"' in page.text
    assert srcdoc(page.text) == "<p>Hello <b>Alex</b></p>"
    for target in ("https://evil.example/templates", "/templates//evil.example"):
        forged = b.post("/templates/render", FORM | {"target": target})
        assert 'action="/templates"' in forged.text
