"""The secure portal's settings in the console: notice subject, expiry, logo and colour
saved through the same service as the API (audited), errors next to their fields,
read-only for people without tenant:write."""

from __future__ import annotations

from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.portal.models import PortalSettings

GOOD = {
    "notice_subject": "A secure message is waiting",
    "expiry_days": "14",
    "logo_url": "/static/logo.png",
    "brand_color": "#123abc",
}


def test_portal_settings_are_saved_and_audited(owner, sign_in, runtime):
    b = sign_in(owner)
    page = b.get("/portal/settings")
    assert page.status_code == 200
    assert "You have a secure message from" in page.text  # the default subject
    assert 'href="/portal/settings"' in b.get("/portal").text
    response = b.post("/portal/settings", GOOD)
    assert response.status_code == 303
    saved_page = b.follow(response)
    assert "Portal settings saved." in saved_page.text
    assert "A secure message is waiting" in saved_page.text and "#123abc" in saved_page.text
    with runtime.database.session() as session:
        row = session.get(PortalSettings, owner.tenant.id)
        assert row is not None
        assert (row.notice_subject, row.expiry_days, row.logo_url, row.brand_color) == (
            "A secure message is waiting", 14, "/static/logo.png", "#123abc",
        )  # fmt: skip
        actions = list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.tenant_id == owner.tenant.id)
            )
        )
        assert "portal.settings_update" in actions


def test_bad_values_are_shown_next_to_their_fields(owner, sign_in, runtime):
    b = sign_in(owner)
    b.get("/portal/settings")
    bad = b.post(
        "/portal/settings",
        {**GOOD, "expiry_days": "400", "logo_url": "https://evil.example/x.png",
         "brand_color": "red"},
    )  # fmt: skip
    assert bad.status_code == 422
    assert 'aria-invalid="true"' in bad.text
    for name in ("expiry_days", "logo_url", "brand_color"):
        assert f'portal-settings-{name}-error"' in bad.text
    assert bad.text.count('aria-invalid="true"') == 3
    not_number = b.post("/portal/settings", {**GOOD, "expiry_days": "ten"})
    assert not_number.status_code == 422 and "whole number" in not_number.text
    with runtime.database.session() as session:
        assert session.get(PortalSettings, owner.tenant.id) is None


def test_readers_see_the_settings_without_a_form(tenant, make_person, sign_in):
    b = sign_in(make_person(tenant, "analyst"))
    page = b.get("/portal/settings")
    assert page.status_code == 200 and "changing them needs an owner" in page.text
    assert "Save portal settings" not in page.text
    assert b.post("/portal/settings", GOOD).status_code == 403
