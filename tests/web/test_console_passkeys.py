"""Passkeys in the console, through the real pages and JSON endpoints with a software
authenticator: added in My account, used on /login/mfa after the password, offered
instead of an app at enrolment, renamed and removed; failures answer JSON errors."""

from __future__ import annotations

import re

import pytest

from carepost.accounts import webauthn as passkeys
from tests.accounts.authenticator import SoftwareAuthenticator
from tests.web.people import BASE_URL

RP = passkeys.relying_party(BASE_URL)


@pytest.fixture
def authenticator() -> SoftwareAuthenticator:
    return SoftwareAuthenticator(RP.id, RP.origin)


def post_json(b, path: str, body: dict | None = None, *, csrf: bool = True):
    headers = {"X-CSRF-Token": b.csrf} if csrf else {}
    return b.client.post(path, json=body or {}, headers=headers, follow_redirects=False)


def add_passkey(b, authenticator, name: str = "Work laptop"):
    options = post_json(b, "/account/passkeys/options")
    assert options.status_code == 200, options.text
    response = authenticator.create(options.json())
    return post_json(b, "/account/passkeys", {"credential": response, "name": name})


def use_passkey(b, authenticator, **phish):
    options = post_json(b, "/login/mfa/passkey/options")
    assert options.status_code == 200, options.text
    return post_json(
        b, "/login/mfa/passkey", {"credential": authenticator.get(options.json(), **phish)}
    )


def test_a_passkey_is_added_in_my_account(tenant, make_person, sign_in, authenticator):
    b = sign_in(make_person(tenant, "marketer"))
    page = b.get("/account")
    assert 'id="passkeys"' in page.text and "You have no passkeys yet." in page.text
    added = add_passkey(b, authenticator)
    assert added.status_code == 200
    assert added.json() == {"redirect": "/account?done=passkey-added#passkeys"}
    page = b.get("/account?done=passkey-added")
    assert "Passkey added." in page.text
    assert 'value="Work laptop"' in page.text
    assert "You sign in with a passkey." in page.text


def test_the_json_endpoints_need_the_csrf_token(tenant, make_person, sign_in, authenticator):
    b = sign_in(make_person(tenant, "marketer"))
    assert post_json(b, "/account/passkeys/options", csrf=False).status_code == 403
    assert post_json(b, "/account/passkeys", {"credential": {}}, csrf=False).status_code == 403


def test_a_bad_registration_answers_a_json_error(tenant, make_person, sign_in, authenticator):
    b = sign_in(make_person(tenant, "marketer"))
    options = post_json(b, "/account/passkeys/options").json()
    phished = authenticator.create(options, origin="https://evil.example")
    refused = post_json(b, "/account/passkeys", {"credential": phished})
    assert refused.status_code == 401
    assert refused.json()["error"].startswith("The passkey was not added")
    missing = post_json(b, "/account/passkeys", {"name": "no credential"})
    assert missing.status_code == 422 and "missing" in missing.json()["error"]


def test_sign_in_with_password_then_passkey(
    tenant, make_person, sign_in, login, authenticator, audit_trail
):
    person = make_person(tenant, "marketer", mfa=False)
    add_passkey(sign_in(person), authenticator)

    b, answer = login(person)
    assert answer.headers["location"] == "/login/mfa"
    page = b.get("/login/mfa")
    assert "Use a passkey" in page.text and "/static/passkeys.js" in page.text
    assert 'name="code"' not in page.text  # no app enrolled: no code field
    # Not signed in yet.
    assert b.get("/").headers["location"] == "/login/mfa"
    pending_cookie = b.client.cookies.get("carepost_session")

    done = use_passkey(b, authenticator)
    assert done.status_code == 200 and done.json() == {"redirect": "/"}
    assert b.client.cookies.get("carepost_session") != pending_cookie  # a new token
    assert b.get("/").status_code == 200
    assert [e.outcome for e in audit_trail(tenant, "auth.webauthn_use")] == ["success"]


def test_a_failed_passkey_sign_in_stays_on_the_step(
    tenant, make_person, sign_in, login, authenticator
):
    person = make_person(tenant, "marketer", mfa=False)
    add_passkey(sign_in(person), authenticator)
    b, _ = login(person)
    refused = use_passkey(b, authenticator, origin="https://carepost-login.example")
    assert refused.status_code == 401
    assert "could not be verified" in refused.json()["error"]
    assert b.get("/").headers["location"] == "/login/mfa"
    # The page's own answer still works afterwards.
    assert use_passkey(b, authenticator).status_code == 200


def test_an_owner_with_app_and_passkey_may_use_either(tenant, make_person, sign_in, login):
    owner = make_person(tenant, "owner")
    authenticator = SoftwareAuthenticator(RP.id, RP.origin)
    add_passkey(sign_in(owner), authenticator)
    b, _ = login(owner)
    page = b.get("/login/mfa")
    assert "Use a passkey" in page.text and 'name="code"' in page.text
    answer = b.post("/login/mfa", {"code": owner.totp()})
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_passkey_sign_in_options_need_the_mfa_step(tenant, make_person, sign_in, login):
    b = sign_in(make_person(tenant, "marketer"))  # fully signed in: no step to take
    answer = post_json(b, "/login/mfa/passkey/options")
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_an_owner_enrols_a_passkey_instead_of_an_app(
    tenant, make_person, login, authenticator, runtime
):
    owner = make_person(tenant, "owner", mfa=False)
    b, answer = login(owner)
    assert answer.headers["location"] == "/mfa/enrol"
    page = b.get("/mfa/enrol")
    assert "Or add a passkey instead of an app" in page.text
    # Still part-way: the console is out of reach.
    assert b.get("/").headers["location"] == "/mfa/enrol"
    added = add_passkey(b, authenticator, name="Laptop")
    assert added.status_code == 200 and added.json() == {"redirect": "/"}
    assert b.get("/").status_code == 200
    # Next time, the passkey is the second factor.
    b2, answer = login(owner)
    assert answer.headers["location"] == "/login/mfa"
    assert use_passkey(b2, authenticator).json() == {"redirect": "/"}


def test_a_password_alone_cannot_add_a_passkey_to_an_account_that_has_one(
    tenant, make_person, sign_in, login, authenticator
):
    person = make_person(tenant, "marketer", mfa=False)
    add_passkey(sign_in(person), authenticator)
    b, _ = login(person)  # password only: the passkey step is pending
    answer = post_json(b, "/account/passkeys/options")
    assert answer.status_code == 303 and answer.headers["location"] == "/login/mfa"
    answer = post_json(b, "/account/passkeys", {"credential": {}})
    assert answer.status_code == 303 and answer.headers["location"] == "/login/mfa"


def test_a_passkey_is_renamed_and_removed(tenant, make_person, sign_in, authenticator):
    b = sign_in(make_person(tenant, "marketer"))
    add_passkey(b, authenticator, name="Old name")
    page = b.get("/account")
    passkey_id = re.search(r'action="/account/passkeys/([0-9a-f-]{36})"', page.text).group(1)

    renamed = b.post(f"/account/passkeys/{passkey_id}", {"name": "Blue security key"})
    assert renamed.headers["location"] == "/account?done=passkey-renamed#passkeys"
    assert 'value="Blue security key"' in b.get("/account").text

    empty = b.post(f"/account/passkeys/{passkey_id}", {"name": "  "})
    assert empty.status_code == 422 and "Give the passkey a name." in empty.text

    removed = b.post(f"/account/passkeys/{passkey_id}/delete")
    assert removed.headers["location"] == "/account?done=passkey-removed#passkeys"
    assert "You have no passkeys yet." in b.get("/account").text


def test_an_owners_only_second_factor_cannot_be_removed(tenant, make_person, login, authenticator):
    owner = make_person(tenant, "owner", mfa=False)
    b, _ = login(owner)
    add_passkey(b, authenticator)  # enrolment: now signed in
    page = b.get("/account")
    passkey_id = re.search(r'action="/account/passkeys/([0-9a-f-]{36})"', page.text).group(1)
    refused = b.post(f"/account/passkeys/{passkey_id}/delete")
    assert refused.status_code == 409
    assert "only second factor" in refused.text
    assert f'id="passkey-{passkey_id}"' in refused.text


def test_a_colleagues_passkey_is_not_found(tenant, make_person, sign_in, authenticator):
    owner = sign_in(make_person(tenant, "marketer"))
    add_passkey(owner, authenticator)
    passkey_id = re.search(
        r'action="/account/passkeys/([0-9a-f-]{36})"', owner.get("/account").text
    ).group(1)
    colleague = sign_in(make_person(tenant, "owner"))
    assert colleague.post(f"/account/passkeys/{passkey_id}/delete").status_code == 404
    assert colleague.post(f"/account/passkeys/{passkey_id}", {"name": "x"}).status_code == 404
