"""One-click unsubscribe and the preference center, as a recipient meets them: signed
links without sign-in, immediate effect, the recipient as the audited actor, no PHI
in URLs or pages beyond a masked address, and every bad link the same 404."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.consent import links
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.decision import may_send
from carepost.consent.links import LinkKind
from carepost.consent.recipient import mask_address

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
INVALID = "This link is not valid or has expired"


def token(clinic, kind=LinkKind.UNSUBSCRIBE, channel="email", **options) -> str:
    return links.make_token(clinic.keys, kind, clinic.contact_id, channel, **options)


def decision(runtime, clinic, purpose="marketing"):
    with runtime.bound_session(clinic.keys) as session:
        consents = consent.current_consents(session, clinic.tenant_id, clinic.contact_id)
        match = suppressions.suppression_match(session, clinic.keys, clinic.email)
    return may_send(consents, match, "email", purpose, False, datetime.now(UTC))


def grant_marketing(runtime, clinic, channel="email"):
    with runtime.bound_session(clinic.keys) as session:
        consent.record_consent(
            session,
            clinic.tenant_id,
            contact_id=clinic.contact_id,
            change=consent.ConsentChange(channel, "marketing", "granted", "web_form"),
            actor=SYSTEM,
        )


def test_unsubscribing_is_one_click_and_immediate(runtime, client, clinic, audit_trail):
    grant_marketing(runtime, clinic)
    assert decision(runtime, clinic)
    url = f"/u/{token(clinic)}"
    response = client.post(url, data=ONE_CLICK, follow_redirects=False)
    assert response.status_code == 200  # RFC 8058: no redirect
    assert "You are unsubscribed" in response.text
    refused = decision(runtime, clinic)
    assert not refused and "suppressed_for_marketing:unsubscribe" in refused.reasons
    assert "consent_revoked:marketing" in refused.reasons
    assert decision(runtime, clinic, "transactional")  # care messages still go
    event = audit_trail(clinic.tenant, "recipient.unsubscribe")[-1]
    assert event.actor_type == "recipient" and event.actor_id == str(clinic.contact_id)
    created = audit_trail(clinic.tenant, "suppression.create")[-1]
    assert created.actor_type == "recipient" and created.details["source"] == "one_click"


def test_a_mail_client_post_without_a_browser_works(client, clinic, runtime):
    """Mailbox providers POST the RFC 8058 body with no cookies, no CSRF token."""
    response = client.post(
        f"/u/{token(clinic)}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    with runtime.bound_session(clinic.keys) as session:
        assert suppressions.is_suppressed(session, clinic.keys, clinic.email, "marketing")


def test_opening_the_link_does_not_unsubscribe(runtime, client, clinic):
    """Link scanners fetch URLs with GET: only the button (a POST) acts."""
    grant_marketing(runtime, clinic)
    page = client.get(f"/u/{token(clinic)}")
    assert page.status_code == 200
    assert 'method="post"' in page.text and "Unsubscribe" in page.text
    assert decision(runtime, clinic)


def test_unsubscribing_twice_is_harmless(client, clinic, audit_trail):
    url = f"/u/{token(clinic)}"
    assert client.post(url, data=ONE_CLICK).status_code == 200
    assert client.post(url, data=ONE_CLICK).status_code == 200
    assert len(audit_trail(clinic.tenant, "suppression.create")) == 1


def test_pages_show_the_organization_and_only_a_masked_address(client, clinic):
    local, domain = clinic.email.split("@")
    for page in (
        client.get(f"/u/{token(clinic)}"),
        client.get(f"/p/{token(clinic, LinkKind.PREFERENCES)}"),
    ):
        assert page.status_code == 200
        assert "Test Clinic" in page.text
        assert clinic.email not in page.text and local not in page.text
        assert f"{local[0]}\u2022\u2022\u2022@{domain}" in page.text
        assert clinic.phone not in page.text


def test_tokens_hold_no_address_or_phi(clinic):
    for kind in LinkKind:
        raw = base64.urlsafe_b64decode(token(clinic, kind) + "==")
        assert clinic.email.encode() not in raw
        assert clinic.email.split("@")[0].encode() not in raw


def _tampered(value: str) -> list[str]:
    raw = bytearray(base64.urlsafe_b64decode(value + "=="))
    variants = []
    for position in (0, 1, 5, 20, 35, 40, len(raw) - 1):
        copy = bytearray(raw)
        copy[position] ^= 0x01
        variants.append(base64.urlsafe_b64encode(bytes(copy)).decode().rstrip("="))
    return [*variants, value[:-2], value + "AA", "not-a-token", "%00", "x" * 500]


@pytest.mark.parametrize("kind", list(LinkKind))
def test_tampered_tokens_get_the_same_404(kind, runtime, client, clinic, audit_trail):
    before = len(audit_trail(clinic.tenant))
    prefix = f"/{kind.value}/"
    for bad in _tampered(token(clinic, kind)):
        for method in ("GET", "POST"):
            response = client.request(method, prefix + bad, data=ONE_CLICK)
            assert response.status_code == 404 and INVALID in response.text, bad
    assert len(audit_trail(clinic.tenant)) == before


def test_expired_tokens_get_the_same_404(client, clinic):
    long_ago = datetime.now(UTC) - timedelta(days=500)
    for kind in LinkKind:
        expired = token(clinic, kind, now=long_ago, ttl=timedelta(days=1))
        response = client.get(f"/{kind.value}/{expired}")
        assert response.status_code == 404 and INVALID in response.text


def test_a_token_of_one_kind_does_not_open_the_other(client, clinic):
    unsubscribe = token(clinic, LinkKind.UNSUBSCRIBE)
    preferences = token(clinic, LinkKind.PREFERENCES)
    assert client.get(f"/p/{unsubscribe}").status_code == 404
    assert client.post(f"/u/{preferences}", data=ONE_CLICK).status_code == 404


def test_another_tenants_key_cannot_sign_for_this_tenant(
    client, clinic, make_tenant, make_contact, audit_trail
):
    other = make_tenant("Other Clinic")
    # Signed with the other tenant's key but naming this tenant's contact: rejected.
    forged = links.make_token(other[1], LinkKind.UNSUBSCRIBE, clinic.contact_id, "email")
    raw = bytearray(base64.urlsafe_b64decode(forged + "=="))
    raw[2:18] = clinic.tenant_id.bytes
    swapped = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    before = len(audit_trail(clinic.tenant))
    for bad in (forged, swapped):
        assert client.post(f"/u/{bad}", data=ONE_CLICK).status_code == 404
    assert len(audit_trail(clinic.tenant)) == before


def test_a_deleted_contacts_link_is_invalid(client, clinic, runtime):
    from carepost.contacts import service as contacts

    link = token(clinic)
    with runtime.bound_session(clinic.keys) as session:
        contacts.delete_contact(
            session, tenant_id=clinic.tenant_id, contact_id=clinic.contact_id, actor=SYSTEM
        )
    assert client.post(f"/u/{link}", data=ONE_CLICK).status_code == 404


def test_the_verifier_rejects_every_kind_of_bad_token(clinic):
    good = token(clinic)
    assert links.verify(clinic.keys, good, LinkKind.UNSUBSCRIBE).contact_id == clinic.contact_id
    later = datetime.now(UTC) + links.UNSUBSCRIBE_TTL + timedelta(days=1)
    with pytest.raises(links.InvalidLink):
        links.verify(clinic.keys, good, LinkKind.UNSUBSCRIBE, now=later)
    for bad in _tampered(good):
        with pytest.raises(links.InvalidLink):
            links.verify(clinic.keys, bad, LinkKind.UNSUBSCRIBE)


# --- the preference center -------------------------------------------------------------


def create_topic(runtime, clinic, key="flu-shots", name="Flu shot reminders", channels=("email",)):
    with runtime.bound_session(clinic.keys) as session:
        consent.create_topic(
            session, clinic.tenant_id, key=key, name=name, channels=channels, actor=SYSTEM
        )


def history(runtime, clinic):
    with runtime.bound_session(clinic.keys) as session:
        return consent.consent_history(session, clinic.tenant_id, clinic.contact_id)


def test_preferences_show_topics_per_channel(runtime, client, clinic):
    create_topic(runtime, clinic)
    create_topic(runtime, clinic, "wellness", "Wellness newsletter", ("email", "sms"))
    page = client.get(f"/p/{token(clinic, LinkKind.PREFERENCES)}")
    assert page.status_code == 200
    for label in ("Flu shot reminders", "Wellness newsletter", "News, reminders and offers"):
        assert label in page.text
    assert page.text.count('type="checkbox"') == 5  # marketing: 2, flu: 1, wellness: 2
    assert 'value="flu-shots:email"' in page.text and 'value="flu-shots:sms"' not in page.text


def test_saving_preferences_records_consent_from_the_preference_center(
    runtime, client, clinic, audit_trail
):
    create_topic(runtime, clinic)
    grant_marketing(runtime, clinic, "sms")
    url = f"/p/{token(clinic, LinkKind.PREFERENCES)}"
    saved = client.post(url, data={"consent": ["flu-shots:email", "marketing:email"]})
    assert saved.status_code == 200 and "Your choices are saved" in saved.text
    records = history(runtime, clinic)
    changed = {(r.channel, r.purpose, r.status) for r in records if r.source == "preference_center"}
    assert changed == {
        ("email", "flu-shots", "granted"),
        ("email", "marketing", "granted"),
        ("sms", "marketing", "revoked"),
    }
    assert 'value="flu-shots:email" checked' in saved.text
    event = audit_trail(clinic.tenant, "recipient.preferences")[-1]
    assert event.actor_type == "recipient" and event.details["changed"] == 3
    # Saving the same choices again changes nothing.
    client.post(url, data={"consent": ["flu-shots:email", "marketing:email"]})
    assert len(history(runtime, clinic)) == len(records)


def test_unsubscribe_from_all(runtime, client, clinic):
    create_topic(runtime, clinic)
    grant_marketing(runtime, clinic)
    url = f"/p/{token(clinic, LinkKind.PREFERENCES)}"
    client.post(url, data={"consent": ["flu-shots:email"]})
    done = client.post(url, data={"consent": ["flu-shots:email"], "action": "unsubscribe_all"})
    assert done.status_code == 200 and "unsubscribed from all marketing" in done.text
    assert "checked" not in done.text
    with runtime.bound_session(clinic.keys) as session:
        current = consent.current_consents(session, clinic.tenant_id, clinic.contact_id)
        assert all(state.status == "revoked" for state in current.values())
        assert suppressions.is_suppressed(session, clinic.keys, clinic.email, "marketing")
        assert suppressions.is_suppressed(session, clinic.keys, clinic.phone, "marketing")
        assert not suppressions.is_suppressed(session, clinic.keys, clinic.email, "transactional")


def test_opting_in_again_lifts_only_an_unsubscribe(runtime, client, clinic):
    client.post(f"/u/{token(clinic)}", data=ONE_CLICK)
    url = f"/p/{token(clinic, LinkKind.PREFERENCES)}"
    client.post(url, data={"consent": ["marketing:email"]})
    assert decision(runtime, clinic)
    with runtime.bound_session(clinic.keys) as session:
        suppressions.add_suppression(
            session,
            clinic.keys,
            address=clinic.email,
            reason="hard_bounce",
            source="bounce",
            actor=SYSTEM,
        )
    client.post(url, data={"consent": []})
    client.post(url, data={"consent": ["marketing:email"]})
    refused = decision(runtime, clinic)
    assert not refused and refused.reasons == ("suppressed:hard_bounce",)


def test_a_forged_choice_is_ignored(runtime, client, clinic):
    url = f"/p/{token(clinic, LinkKind.PREFERENCES)}"
    response = client.post(url, data={"consent": ["research:email", "marketing_phi:email", "x"]})
    assert response.status_code == 200
    assert history(runtime, clinic) == []


def test_mask_address():
    assert mask_address("email", "jane@example.org") == "j\u2022\u2022\u2022@example.org"
    assert mask_address("sms", "+14155550123") == "+1" + "\u2022" * 8 + "23"
