"""Passkeys (WebAuthn Level 2) with real ceremony data from a software authenticator:
registration and sign-in work; replayed, expired, phished (other origin or RP id),
tampered and cloned (counter gone back) responses are refused and audited; a passkey
is reachable only by its owner in its own organization."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from carepost.accounts import service, sessions
from carepost.accounts import webauthn as passkeys
from carepost.accounts.models import User, WebAuthnChallenge, WebAuthnCredential
from carepost.audit.service import Actor
from carepost.core.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from tests.accounts.authenticator import SoftwareAuthenticator, b64url, unb64url
from tests.conftest import new_password, secret_value

RP = passkeys.relying_party("https://testserver")


@pytest.fixture
def person(runtime, tenant):
    """(tenant, user id, console session id) of a marketer signed in with a password."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email=f"nurse-{uuid.uuid4().hex[:6]}@clinic.example",
            role="marketer",
            password=new_password(),
        )
        token, row = sessions.create_session(
            session, user=user, tenant=tenant_row, stage=sessions.STAGE_MFA_OK
        )
        secret_value(token)
        return tenant, user.id, row.id


def actor_of(user_id) -> Actor:
    return Actor("user", str(user_id), "person", "127.0.0.1")


def run(runtime, person, step):
    """``step(session, user, session_id)`` in its own committed unit of work; a domain
    error is returned (after the failure's audit and lockout count are committed)."""
    tenant, user_id, session_id = person
    with runtime.bound_session(tenant[1]) as session:
        user = session.get(User, user_id)
        try:
            return step(session, user, session_id)
        except (AuthenticationFailed, Conflict, NotFound, RateLimited, ValidationFailed) as error:
            return error


def options_to_register(runtime, person):
    return run(
        runtime,
        person,
        lambda s, u, sid: passkeys.registration_options(s, rp=RP, user=u, session_id=sid),
    )


def register(runtime, person, response, name="Work laptop"):
    return run(
        runtime,
        person,
        lambda s, u, sid: passkeys.register_passkey(
            s, rp=RP, user=u, session_id=sid, response=response, name=name, actor=actor_of(u.id)
        ),
    )


def options_to_sign_in(runtime, person):
    return run(
        runtime,
        person,
        lambda s, u, sid: passkeys.authentication_options(s, rp=RP, user=u, session_id=sid),
    )


def sign_in(runtime, person, response):
    return run(
        runtime,
        person,
        lambda s, u, sid: passkeys.verify_passkey(
            s, rp=RP, user=u, session_id=sid, response=response, actor=actor_of(u.id)
        ),
    )


@pytest.fixture
def authenticator() -> SoftwareAuthenticator:
    return SoftwareAuthenticator(RP.id, RP.origin)


@pytest.fixture
def registered(runtime, person, authenticator):
    """``person`` with one passkey on ``authenticator``; returns the passkey's row."""
    options = options_to_register(runtime, person)
    passkey = register(runtime, person, authenticator.create(options))
    assert isinstance(passkey, WebAuthnCredential), passkey
    return passkey


def stored(runtime, person) -> list[WebAuthnCredential]:
    tenant, user_id, _ = person
    with runtime.bound_session(tenant[1]) as session:
        return passkeys.list_passkeys(session, tenant_id=tenant[0].id, user_id=user_id)


def failed_sign_ins(runtime, person) -> int:
    tenant, user_id, _ = person
    with runtime.bound_session(tenant[1]) as session:
        return session.get(User, user_id).failed_sign_ins


# --- the relying party ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "rp_id", "origin"),
    [
        (
            "https://carepost.clinic.example",
            "carepost.clinic.example",
            "https://carepost.clinic.example",
        ),
        ("https://carepost.example:443", "carepost.example", "https://carepost.example"),
        ("http://localhost:8000", "localhost", "http://localhost:8000"),
        ("https://care.example:8443/console", "care.example", "https://care.example:8443"),
    ],
)
def test_the_relying_party_is_the_public_address(base_url, rp_id, origin):
    rp = passkeys.relying_party(base_url)
    assert (rp.id, rp.origin) == (rp_id, origin)


def test_a_base_url_without_a_host_is_a_configuration_error():
    with pytest.raises(ConfigError):
        passkeys.relying_party("https://")


# --- registration ---------------------------------------------------------------------


def test_registration_options_name_carepost_and_exclude_existing_passkeys(
    runtime, person, registered
):
    options = options_to_register(runtime, person)
    assert options["rp"] == {"id": "testserver", "name": "carepost"}
    assert unb64url(options["user"]["id"]) == person[1].bytes  # no email in the handle
    assert options["attestation"] == "none"
    assert len(unb64url(options["challenge"])) == 32
    assert [c["id"] for c in options["excludeCredentials"]] == [registered.credential_id]


def test_a_passkey_is_registered_and_audited_without_key_material(
    runtime, person, authenticator, audit_trail
):
    options = options_to_register(runtime, person)
    response = authenticator.create(options)
    passkey = register(runtime, person, response, name="  Work   laptop ")
    assert isinstance(passkey, WebAuthnCredential)
    assert passkey.name == "Work laptop"
    assert passkey.credential_id == response["id"]
    assert passkey.transports == ["internal"]
    assert passkey.sign_count == 0 and passkey.last_used_at is None
    [event] = audit_trail(person[0], "auth.webauthn_register")
    assert event.outcome == "success" and event.object_id == str(passkey.id)
    recorded = json.dumps(event.details) + event.reason
    assert response["id"] not in recorded
    assert b64url(passkey.public_key) not in recorded
    assert response["response"]["attestationObject"] not in recorded


def test_a_passkey_without_a_name_gets_a_numbered_one(runtime, person, authenticator):
    for _ in range(2):
        register(runtime, person, authenticator.create(options_to_register(runtime, person)), "")
    assert [p.name for p in stored(runtime, person)] == ["Passkey 1", "Passkey 2"]


def test_a_replayed_registration_is_refused(runtime, person, authenticator, audit_trail):
    response = authenticator.create(options_to_register(runtime, person))
    assert isinstance(register(runtime, person, response), WebAuthnCredential)
    # The same answer again: its challenge was used up.
    assert isinstance(register(runtime, person, response), AuthenticationFailed)
    # ... and still with a fresh challenge pending: it answers the old one.
    options_to_register(runtime, person)
    assert isinstance(register(runtime, person, response), AuthenticationFailed)
    assert len(stored(runtime, person)) == 1
    failures = audit_trail(person[0], "auth.webauthn_register")
    assert [e.outcome for e in failures] == ["success", "failure", "failure"]


@pytest.mark.parametrize(
    "phish",
    [
        {"origin": "https://testserver.evil.example"},
        {"origin": "http://testserver"},
        {"rp_id": "evil.example"},
    ],
    ids=["other-origin", "plain-http", "other-rp-id"],
)
def test_a_registration_made_for_another_site_is_refused(runtime, person, authenticator, phish):
    response = authenticator.create(options_to_register(runtime, person), **phish)
    assert isinstance(register(runtime, person, response), AuthenticationFailed)
    assert stored(runtime, person) == []


def test_a_registration_after_the_challenge_expired_is_refused(
    runtime, person, authenticator, clock
):
    options = options_to_register(runtime, person)
    clock.advance(minutes=5, seconds=1)
    assert isinstance(
        register(runtime, person, authenticator.create(options)), AuthenticationFailed
    )


def test_garbage_instead_of_a_registration_is_refused(runtime, person):
    options_to_register(runtime, person)
    for response in ({}, {"id": "x", "rawId": "x", "type": "public-key", "response": {}}):
        assert isinstance(register(runtime, person, response), AuthenticationFailed)


def test_the_same_authenticator_credential_cannot_be_registered_twice(
    runtime, person, make_tenant, authenticator
):
    response = authenticator.create(options_to_register(runtime, person))
    assert isinstance(register(runtime, person, response), WebAuthnCredential)
    # An attacker who captured the answer cannot attach the same credential id elsewhere:
    # the challenge differs, so the ceremony fails before the id is even considered.
    other = _other_person(runtime, make_tenant)
    options_to_register(runtime, other)
    assert isinstance(register(runtime, other, response), AuthenticationFailed)


def test_a_too_long_name_is_refused(runtime, person, authenticator):
    response = authenticator.create(options_to_register(runtime, person))
    error = register(runtime, person, response, name="x" * 101)
    assert isinstance(error, ValidationFailed) and error.errors[0].field == "name"


# --- sign-in ---------------------------------------------------------------------------


def test_a_passkey_signs_in_and_its_counter_and_use_are_recorded(
    runtime, person, registered, authenticator, audit_trail
):
    options = options_to_sign_in(runtime, person)
    assert options["rpId"] == "testserver"
    assert [c["id"] for c in options["allowCredentials"]] == [registered.credential_id]
    used = sign_in(runtime, person, authenticator.get(options))
    assert isinstance(used, WebAuthnCredential), used
    assert used.sign_count == 1 and used.last_used_at is not None
    [event] = audit_trail(person[0], "auth.webauthn_use")
    assert event.outcome == "success" and event.object_id == str(registered.id)
    assert registered.credential_id not in json.dumps(event.details)


def test_a_replayed_assertion_is_refused(runtime, person, registered, authenticator):
    response = authenticator.get(options_to_sign_in(runtime, person))
    assert isinstance(sign_in(runtime, person, response), WebAuthnCredential)
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)
    options_to_sign_in(runtime, person)
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)


def test_only_the_latest_challenge_counts(runtime, person, registered, authenticator):
    first = options_to_sign_in(runtime, person)
    options_to_sign_in(runtime, person)
    assert isinstance(sign_in(runtime, person, authenticator.get(first)), AuthenticationFailed)


def test_a_challenge_of_another_purpose_does_not_count(runtime, person, registered, authenticator):
    # Options for adding a passkey do not make a sign-in challenge.
    options = options_to_register(runtime, person)
    response = authenticator.get(
        {"challenge": options["challenge"], "allowCredentials": [{"id": registered.credential_id}]}
    )
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)


def test_an_assertion_after_the_challenge_expired_is_refused(
    runtime, person, registered, authenticator, clock
):
    options = options_to_sign_in(runtime, person)
    clock.advance(minutes=5, seconds=1)
    assert isinstance(sign_in(runtime, person, authenticator.get(options)), AuthenticationFailed)
    _tenant, _, session_id = person
    with runtime.database.session() as session:
        left = session.scalars(
            select(WebAuthnChallenge).where(WebAuthnChallenge.session_id == session_id)
        ).all()
    assert left == []


@pytest.mark.parametrize(
    "phish",
    [
        {"origin": "https://testserver.evil.example"},
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
    ],
    ids=["look-alike-origin", "other-origin", "other-rp-id"],
)
def test_an_assertion_made_for_another_site_is_refused(
    runtime, person, registered, authenticator, audit_trail, phish
):
    response = authenticator.get(options_to_sign_in(runtime, person), **phish)
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)
    [event] = audit_trail(person[0], "auth.webauthn_use")
    assert event.outcome == "failure" and event.object_id == str(registered.id)
    assert ("origin" in event.reason) or ("RP ID" in event.reason)
    assert failed_sign_ins(runtime, person) == 1


def test_a_signature_counter_that_goes_back_is_refused(
    runtime, person, registered, authenticator, audit_trail
):
    for _ in range(3):
        response = authenticator.get(options_to_sign_in(runtime, person))
        assert isinstance(sign_in(runtime, person, response), WebAuthnCredential)
    # A clone of the authenticator, copied when its counter was 2.
    options = options_to_sign_in(runtime, person)
    cloned = authenticator.get(options, sign_count=2)
    assert isinstance(sign_in(runtime, person, cloned), AuthenticationFailed)
    # The same counter again is no better.
    cloned = authenticator.get(options_to_sign_in(runtime, person), sign_count=3)
    assert isinstance(sign_in(runtime, person, cloned), AuthenticationFailed)
    assert stored(runtime, person)[0].sign_count == 3
    refusals = [e for e in audit_trail(person[0], "auth.webauthn_use") if e.outcome == "failure"]
    assert len(refusals) == 2 and all("sign count" in e.reason for e in refusals)


def test_an_authenticator_without_a_counter_keeps_working(runtime, person):
    counterless = SoftwareAuthenticator(RP.id, RP.origin, counter_step=0)
    register(runtime, person, counterless.create(options_to_register(runtime, person)))
    for _ in range(2):
        response = counterless.get(options_to_sign_in(runtime, person))
        assert isinstance(sign_in(runtime, person, response), WebAuthnCredential)


def test_a_tampered_signature_is_refused(runtime, person, registered, authenticator):
    response = authenticator.get(options_to_sign_in(runtime, person))
    signature = bytearray(unb64url(response["response"]["signature"]))
    signature[-1] ^= 0x01
    response["response"]["signature"] = b64url(bytes(signature))
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)


def test_another_key_claiming_the_credential_id_is_refused(runtime, person, registered):
    impostor = SoftwareAuthenticator(RP.id, RP.origin)
    impostor.create(options_to_register(runtime, person))  # a key of its own
    forged = next(iter(impostor.credentials.values()))
    forged.credential_id = unb64url(registered.credential_id)
    response = impostor.get(options_to_sign_in(runtime, person), credential=forged)
    assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)


def test_failed_passkey_sign_ins_lock_the_account(runtime, person, registered, authenticator):
    for _ in range(service.FREE_FAILURES):
        response = authenticator.get(
            options_to_sign_in(runtime, person), origin="https://evil.example"
        )
        assert isinstance(sign_in(runtime, person, response), AuthenticationFailed)
    # Locked now: even a good answer waits.
    good = authenticator.get(options_to_sign_in(runtime, person))
    assert isinstance(sign_in(runtime, person, good), RateLimited)


def test_sign_in_options_need_a_passkey(runtime, person):
    assert isinstance(options_to_sign_in(runtime, person), Conflict)


# --- organizations and people ----------------------------------------------------------


def _other_person(runtime, make_tenant):
    tenant = make_tenant("Other Clinic")
    with runtime.bound_session(tenant[1]) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant[0].id,
            email="other@clinic.example",
            role="marketer",
            password=new_password(),
        )
        token, row = sessions.create_session(
            session, user=user, tenant=tenant[0], stage=sessions.STAGE_MFA_OK
        )
        secret_value(token)
        return tenant, user.id, row.id


def test_another_organizations_passkey_is_not_found(runtime, person, make_tenant):
    other = _other_person(runtime, make_tenant)
    theirs = SoftwareAuthenticator(RP.id, RP.origin)
    their_passkey = register(runtime, other, theirs.create(options_to_register(runtime, other)))
    assert isinstance(their_passkey, WebAuthnCredential)
    actor = actor_of(person[1])
    for attempt in (
        lambda s, u, _sid: passkeys.get_passkey(
            s, tenant_id=u.tenant_id, user_id=u.id, passkey_id=their_passkey.id
        ),
        lambda s, u, _sid: passkeys.rename_passkey(
            s, user=u, passkey_id=their_passkey.id, name="mine now", actor=actor
        ),
        lambda s, u, _sid: passkeys.delete_passkey(
            s, user=u, passkey_id=their_passkey.id, actor=actor
        ),
    ):
        assert isinstance(run(runtime, person, attempt), NotFound)
    assert stored(runtime, other)[0].name == "Work laptop"


def test_another_organizations_credential_cannot_sign_in(runtime, person, registered, make_tenant):
    other = _other_person(runtime, make_tenant)
    theirs = SoftwareAuthenticator(RP.id, RP.origin)
    register(runtime, other, theirs.create(options_to_register(runtime, other)))
    # Their (valid, correctly signed) credential offered on our user's sign-in.
    options = options_to_sign_in(runtime, person)
    response = theirs.get(options, credential=next(iter(theirs.credentials.values())))
    error = sign_in(runtime, person, response)
    assert isinstance(error, AuthenticationFailed)


def test_a_colleagues_passkey_is_not_found(runtime, person, tenant, registered):
    colleague = _colleague(runtime, tenant)
    error = run(
        runtime,
        colleague,
        lambda s, u, _sid: passkeys.delete_passkey(
            s, user=u, passkey_id=registered.id, actor=actor_of(u.id)
        ),
    )
    assert isinstance(error, NotFound)
    assert len(stored(runtime, person)) == 1


def _colleague(runtime, tenant):
    with runtime.bound_session(tenant[1]) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant[0].id,
            email=f"colleague-{uuid.uuid4().hex[:6]}@clinic.example",
            role="marketer",
            password=new_password(),
        )
        _token, row = sessions.create_session(
            session, user=user, tenant=tenant[0], stage=sessions.STAGE_MFA_OK
        )
        return tenant, user.id, row.id


# --- managing passkeys -------------------------------------------------------------------


def test_a_passkey_is_renamed_and_removed(runtime, person, registered, audit_trail):
    renamed = run(
        runtime,
        person,
        lambda s, u, _sid: passkeys.rename_passkey(
            s, user=u, passkey_id=registered.id, name="Phone", actor=actor_of(u.id)
        ),
    )
    assert renamed.name == "Phone"
    empty = run(
        runtime,
        person,
        lambda s, u, _sid: passkeys.rename_passkey(
            s, user=u, passkey_id=registered.id, name="  ", actor=actor_of(u.id)
        ),
    )
    assert isinstance(empty, ValidationFailed)
    run(
        runtime,
        person,
        lambda s, u, _sid: passkeys.delete_passkey(
            s, user=u, passkey_id=registered.id, actor=actor_of(u.id)
        ),
    )
    assert stored(runtime, person) == []
    assert [e.object_id for e in audit_trail(person[0], "auth.webauthn_delete")] == [
        str(registered.id)
    ]
    assert len(audit_trail(person[0], "auth.webauthn_rename")) == 1


def test_an_owner_keeps_at_least_one_second_factor(runtime, tenant, authenticator):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email="owner@clinic.example",
            role="owner",
            password=new_password(),
        )
        _token, row = sessions.create_session(
            session, user=user, tenant=tenant_row, stage=sessions.STAGE_MFA_OK
        )
        owner = (tenant, user.id, row.id)
    first = register(runtime, owner, authenticator.create(options_to_register(runtime, owner)))
    second = register(runtime, owner, authenticator.create(options_to_register(runtime, owner)))

    def remove(passkey):
        return lambda s, u, _sid: passkeys.delete_passkey(
            s, user=u, passkey_id=passkey.id, actor=actor_of(u.id)
        )

    assert run(runtime, owner, remove(first)) is None
    assert isinstance(run(runtime, owner, remove(second)), Conflict)
    assert len(stored(runtime, owner)) == 1


def test_a_passkey_makes_the_second_factor_required(runtime, person, registered):
    tenant, user_id, _ = person
    with runtime.bound_session(tenant[1]) as session:
        user = session.get(User, user_id)
        assert not service.mfa_required(user)
        assert service.mfa_required(
            user, has_passkey=passkeys.has_passkey(session, tenant_id=tenant[0].id, user_id=user_id)
        )


def test_an_administrator_reset_removes_the_passkeys(runtime, person, registered, audit_trail):
    tenant, user_id, _ = person
    with runtime.bound_session(tenant[1]) as session:
        service.reset_mfa(
            session,
            tenant_id=tenant[0].id,
            user_id=user_id,
            actor=Actor("user", "admin", "admin"),
            actor_role="owner",
        )
    assert stored(runtime, person) == []
    [event] = audit_trail(tenant, "user.mfa_reset")
    assert event.details == {"passkeys_removed": 1}
