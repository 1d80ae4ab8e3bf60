"""The protection policy page in Chromium, as an IT administrator tightens S/MIME
trust: a leaf certificate pasted as a CA is refused next to the field, the CA's own
certificate is taken, the summary says what is in force; the JSON editor refuses
broken JSON and a document the policy model refuses, saves a valid change, and a
change made elsewhere meanwhile is a conflict, not an overwrite. Screenshots go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/protection-policy-*.png``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Page, expect

from carepost.audit.service import SYSTEM
from carepost.policy import service
from carepost.policy.documents import PolicyDocument
from tests.e2e.conftest import sign_in
from tests.e2ee.smimetrust_pki import make_ca, make_leaf
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"protection-policy-{name}.png"), full_page=True)


def test_an_administrator_sets_smime_trust_and_edits_the_policy(
    page: Page, live_server, runtime, make_tenant, screenshots, chromium
):
    tenant = make_tenant("Harbor Health")
    admin = create_person(runtime, tenant, "admin", name="Ray Ito")
    root = make_ca("Harbor Health test root")
    leaf, _key = make_leaf(root, "someone@patient.example")
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")

    sign_in(page, tenant[0].slug, admin.email, admin.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    page.get_by_label("Code").fill(admin.totp())
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Protection policy"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Protection policy")
    expect(page.locator("#policy-revision")).to_contain_text("0 (the defaults)")
    shoot(page, screenshots, "defaults")

    # A recipient's certificate pasted where a CA belongs: refused on the field.
    page.get_by_label("Require a chain to a trusted CA").select_option("yes")
    page.get_by_label("Revocation checking").select_option("soft")
    page.get_by_label("Your trusted CA certificates").fill(leaf_pem)
    page.locator("#save-trust").click()
    expect(page.locator("#trust-trusted_cas-error")).to_contain_text(
        "Certificate 1: not a CA certificate"
    )
    shoot(page, screenshots, "trust-error")

    page.get_by_label("Your trusted CA certificates").fill(root.pem.decode("ascii"))
    page.locator("#save-trust").click()
    expect(page.locator(".notice--success")).to_contain_text("The protection policy is saved")
    expect(page.locator("#policy-summary")).to_contain_text(
        "chain to a trusted CA required; revocation checking soft; 1 CA certificate of yours "
        "and the system's"
    )
    expect(page.locator("#policy-revision")).to_contain_text("1")
    shoot(page, screenshots, "trust-saved")

    # The whole document: broken JSON, then a value the model refuses, then a change.
    page.locator("#document-disclosure summary").click()
    editor = page.get_by_label("Policy document (JSON)")
    editor.fill('{"defaults": ')
    page.locator("#save-document").click()
    expect(page.locator("#policy-document-error")).to_contain_text("Not valid JSON")
    editor = page.get_by_label("Policy document (JSON)")
    editor.fill('{"defaults": {"phi_without_tls": "email"}}')
    page.locator("#save-document").click()
    expect(page.locator("#policy-document-error")).to_contain_text("(at defaults.phi_without_tls)")
    shoot(page, screenshots, "document-error")
    editor = page.get_by_label("Policy document (JSON)")
    text = editor.input_value()
    editor.fill('{"defaults": {"phi_without_tls": "block"}}')
    page.locator("#save-document").click()
    expect(page.locator("#policy-summary")).to_contain_text("refused (the message fails)")
    assert text  # the form kept what was typed when it was refused

    # Someone else changes the policy while this page is open: a conflict, no overwrite.
    with runtime.bound_session(tenant[1]) as session:
        service.put_policy(session, tenant[0].id, PolicyDocument(), actor=SYSTEM)
    page.get_by_label("Revocation checking").select_option("hard")
    page.locator("#save-trust").click()
    expect(page.locator(".error-summary")).to_contain_text("The policy changed since revision 2")
    with runtime.bound_session(tenant[1]) as session:
        assert service.get_policy(session, tenant[0].id).document.smime_trust.revocation == "off"
    shoot(page, screenshots, "conflict")
