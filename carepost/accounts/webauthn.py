"""Passkeys: WebAuthn (W3C Web Authentication Level 2) as a phishing-resistant second factor.

The ceremonies are checked by py_webauthn; this module holds carepost's policy:

- The relying party is carepost's public address (``settings.base_url``): its host is
  the RP id and its scheme, host and port the only accepted origin. A response made on
  any other site (a look-alike phishing page) names that site and fails.
- Challenges are 32 random bytes kept server-side in ``webauthn_challenges``, bound to
  the console session and the purpose (register or authenticate). They expire after
  five minutes and are deleted the moment a response is checked against them, pass or
  fail, so a captured response cannot be replayed.
- An authenticator's signature counter must increase at every use unless it always
  reports 0 (many platform authenticators do); a counter that goes back suggests a
  cloned authenticator and the use is refused.
- A failed passkey sign-in counts toward the account lockout, like a wrong code.

Every registration, use, failure, rename and deletion is audited as ``auth.webauthn_*``
with the passkey's row id; never its credential id, public key or the browser's response.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.options_to_json_dict import options_to_json_dict
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from carepost.accounts import service as accounts
from carepost.accounts.models import User, WebAuthnChallenge, WebAuthnCredential
from carepost.accounts.permissions import MFA_REQUIRED_ROLES, Role
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    NotFound,
    ValidationFailed,
)

CHALLENGE_LIFETIME = timedelta(minutes=5)
CHALLENGE_BYTES = 32
MAX_PASSKEYS = 20
NAME_LENGTH = 100
REGISTER = "register"
AUTHENTICATE = "authenticate"
KNOWN_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)
# What a malformed or failing response may raise while it is parsed and checked.
RESPONSE_ERRORS = (WebAuthnException, ValueError, TypeError, KeyError)


@dataclass(frozen=True)
class RelyingParty:
    """Who passkeys are created for: ``id`` (a host name) and the one accepted origin."""

    id: str
    name: str
    origin: str


def relying_party(base_url: str, name: str = "carepost") -> RelyingParty:
    """The relying party of a carepost served at ``base_url`` (``settings.base_url``)."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https"):
        raise ConfigError("CAREPOST_BASE_URL must be an http(s) URL with a host name for passkeys")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return RelyingParty(id=host, name=name, origin=f"{parts.scheme}://{host}{port}")


# --- challenges ---------------------------------------------------------------------


def _issue_challenge(
    session: Session, *, tenant_id: uuid.UUID, session_id: uuid.UUID, purpose: str
) -> bytes:
    """A fresh challenge for this session and purpose; any earlier one is forgotten."""
    session.execute(
        delete(WebAuthnChallenge).where(
            WebAuthnChallenge.session_id == session_id, WebAuthnChallenge.purpose == purpose
        )
    )
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    session.add(
        WebAuthnChallenge(
            tenant_id=tenant_id,
            session_id=session_id,
            purpose=purpose,
            challenge=bytes_to_base64url(challenge),
            expires_at=utcnow() + CHALLENGE_LIFETIME,
        )
    )
    session.flush()
    return challenge


def _take_challenge(
    session: Session, *, tenant_id: uuid.UUID, session_id: uuid.UUID, purpose: str
) -> bytes | None:
    """The pending challenge, deleted as it is read (single use); None when there is none
    or it expired. Of two concurrent requests only one deletes the row and gets it."""
    row = session.scalar(
        select(WebAuthnChallenge).where(
            WebAuthnChallenge.tenant_id == tenant_id,
            WebAuthnChallenge.session_id == session_id,
            WebAuthnChallenge.purpose == purpose,
        )
    )
    if row is None:
        return None
    taken = session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.id == row.id))
    if not taken.rowcount or row.expires_at <= utcnow():  # type: ignore[attr-defined]
        return None
    return base64url_to_bytes(row.challenge)


# --- registration ---------------------------------------------------------------------


def _descriptor(credential: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(credential.credential_id),
        transports=[AuthenticatorTransport(t) for t in credential.transports] or None,
    )


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if len(cleaned) > NAME_LENGTH:
        raise ValidationFailed(f"use at most {NAME_LENGTH} characters", field="name")
    return cleaned


def registration_options(
    session: Session, *, rp: RelyingParty, user: User, session_id: uuid.UUID
) -> dict[str, Any]:
    """Options for ``navigator.credentials.create()``, as JSON (binary as base64url)."""
    existing = list_passkeys(session, tenant_id=user.tenant_id, user_id=user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise Conflict(f"you have {MAX_PASSKEYS} passkeys; remove one before adding another")
    challenge = _issue_challenge(
        session, tenant_id=user.tenant_id, session_id=session_id, purpose=REGISTER
    )
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        # The user handle is the user's random id: no email or name inside the authenticator.
        user_id=user.id.bytes,
        user_name=user.email,
        user_display_name=user.name or user.email,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[_descriptor(c) for c in existing],
    )
    return options_to_json_dict(options)


def _transports(response: Mapping[str, Any]) -> list[str]:
    inner = response.get("response")
    listed = inner.get("transports") if isinstance(inner, Mapping) else None
    if not isinstance(listed, list):
        return []
    return sorted({t for t in listed if isinstance(t, str) and t in KNOWN_TRANSPORTS})


def register_passkey(
    session: Session,
    *,
    rp: RelyingParty,
    user: User,
    session_id: uuid.UUID,
    response: Mapping[str, Any],
    name: str,
    actor: audit.Actor,
) -> WebAuthnCredential:
    """Check the browser's answer to :func:`registration_options` and store the passkey."""
    cleaned = _clean_name(name)
    challenge = _take_challenge(
        session, tenant_id=user.tenant_id, session_id=session_id, purpose=REGISTER
    )

    def refuse(reason: str) -> AuthenticationFailed:
        audit.record(
            session,
            tenant_id=user.tenant_id,
            actor=actor,
            action="auth.webauthn_register",
            outcome="failure",
            object_type="user",
            object_id=user.id,
            reason=reason,
        )
        return AuthenticationFailed(
            "the passkey was not added: the browser's answer could not be verified; try again",
            field="credential",
        )

    if challenge is None:
        raise refuse("no pending or an expired challenge")
    try:
        verified = verify_registration_response(
            credential=dict(response),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except RESPONSE_ERRORS as exc:
        raise refuse(_reason(exc)) from None
    credential_id = bytes_to_base64url(verified.credential_id)
    taken = session.scalar(
        select(WebAuthnCredential.id).where(WebAuthnCredential.credential_id == credential_id)
    )
    if taken is not None:
        raise Conflict("this passkey is already registered", field="credential")
    count = len(list_passkeys(session, tenant_id=user.tenant_id, user_id=user.id))
    passkey = WebAuthnCredential(
        tenant_id=user.tenant_id,
        user_id=user.id,
        credential_id=credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=_transports(response),
        name=cleaned or f"Passkey {count + 1}",
    )
    session.add(passkey)
    session.flush()
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.webauthn_register",
        object_type="passkey",
        object_id=passkey.id,
        details={
            "user_id": str(user.id),
            "aaguid": verified.aaguid,
            "user_verified": verified.user_verified,
            "backed_up": verified.credential_backed_up,
            "transports": passkey.transports,
        },
    )
    return passkey


def _reason(exc: Exception) -> str:
    """Why a response failed, for the audit trail: the library's explanation (it names
    origins, RP ids and counters, never key material), shortened."""
    return f"{type(exc).__name__}: {exc}"[:300]


# --- authentication ----------------------------------------------------------------------


def authentication_options(
    session: Session, *, rp: RelyingParty, user: User, session_id: uuid.UUID
) -> dict[str, Any]:
    """Options for ``navigator.credentials.get()`` listing the user's passkeys."""
    passkeys = list_passkeys(session, tenant_id=user.tenant_id, user_id=user.id)
    if not passkeys:
        raise Conflict("you have no passkey; use the code from your authenticator app")
    challenge = _issue_challenge(
        session, tenant_id=user.tenant_id, session_id=session_id, purpose=AUTHENTICATE
    )
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
        allow_credentials=[_descriptor(p) for p in passkeys],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json_dict(options)


def verify_passkey(
    session: Session,
    *,
    rp: RelyingParty,
    user: User,
    session_id: uuid.UUID,
    response: Mapping[str, Any],
    actor: audit.Actor,
) -> WebAuthnCredential:
    """Check the browser's answer to :func:`authentication_options` as the second factor.

    Raises RateLimited while the account is locked, AuthenticationFailed otherwise (the
    failure counts toward the lockout and is audited; the caller must commit it).
    """
    now = utcnow()
    accounts.check_not_locked(user, now)
    challenge = _take_challenge(
        session, tenant_id=user.tenant_id, session_id=session_id, purpose=AUTHENTICATE
    )
    raw_id = response.get("rawId")
    passkey = None
    if isinstance(raw_id, str):
        passkey = session.scalar(
            select(WebAuthnCredential).where(
                WebAuthnCredential.tenant_id == user.tenant_id,
                WebAuthnCredential.user_id == user.id,
                WebAuthnCredential.credential_id == raw_id,
            )
        )

    def refuse(reason: str) -> AuthenticationFailed:
        accounts.register_failure(session, user, now)
        audit.record(
            session,
            tenant_id=user.tenant_id,
            actor=actor,
            action="auth.webauthn_use",
            outcome="failure",
            object_type="passkey" if passkey else "user",
            object_id=passkey.id if passkey else user.id,
            reason=reason,
            details={"failures": user.failed_sign_ins},
        )
        return AuthenticationFailed(
            "the passkey could not be verified; try again or use another way to sign in",
            field="credential",
        )

    if challenge is None:
        raise refuse("no pending or an expired challenge")
    if passkey is None:
        raise refuse("not a passkey of this user")
    try:
        verified = verify_authentication_response(
            credential=dict(response),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
        )
    except RESPONSE_ERRORS as exc:
        raise refuse(_reason(exc)) from None
    passkey.sign_count = verified.new_sign_count
    passkey.last_used_at = now
    user.failed_sign_ins = 0
    user.locked_until = None
    user.last_sign_in_at = now
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.webauthn_use",
        object_type="passkey",
        object_id=passkey.id,
        details={"user_verified": verified.user_verified},
    )
    return passkey


# --- the user's passkeys ---------------------------------------------------------------


def list_passkeys(
    session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> list[WebAuthnCredential]:
    return list(
        session.scalars(
            select(WebAuthnCredential)
            .where(WebAuthnCredential.tenant_id == tenant_id, WebAuthnCredential.user_id == user_id)
            .order_by(WebAuthnCredential.created_at, WebAuthnCredential.id)
        )
    )


def has_passkey(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return user_id in users_with_passkeys(session, tenant_id=tenant_id, user_ids=[user_id])


def users_with_passkeys(
    session: Session, *, tenant_id: uuid.UUID, user_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these users hold at least one passkey (one query for a whole page)."""
    if not user_ids:
        return set()
    return set(
        session.scalars(
            select(WebAuthnCredential.user_id)
            .where(
                WebAuthnCredential.tenant_id == tenant_id,
                WebAuthnCredential.user_id.in_(user_ids),
            )
            .distinct()
        )
    )


def get_passkey(
    session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID, passkey_id: uuid.UUID
) -> WebAuthnCredential:
    """One of the user's own passkeys; anyone else's (or another tenant's) is not found."""
    passkey = session.scalar(
        select(WebAuthnCredential).where(
            WebAuthnCredential.tenant_id == tenant_id,
            WebAuthnCredential.user_id == user_id,
            WebAuthnCredential.id == passkey_id,
        )
    )
    if passkey is None:
        raise NotFound("no such passkey")
    return passkey


def rename_passkey(
    session: Session,
    *,
    user: User,
    passkey_id: uuid.UUID,
    name: str,
    actor: audit.Actor,
) -> WebAuthnCredential:
    passkey = get_passkey(session, tenant_id=user.tenant_id, user_id=user.id, passkey_id=passkey_id)
    cleaned = _clean_name(name)
    if not cleaned:
        raise ValidationFailed("give the passkey a name", field="name")
    passkey.name = cleaned
    session.flush()
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.webauthn_rename",
        object_type="passkey",
        object_id=passkey.id,
    )
    return passkey


def delete_passkey(
    session: Session, *, user: User, passkey_id: uuid.UUID, actor: audit.Actor
) -> None:
    """Remove a passkey. A person whose role requires a second factor keeps at least one."""
    passkey = get_passkey(session, tenant_id=user.tenant_id, user_id=user.id, passkey_id=passkey_id)
    others = len(list_passkeys(session, tenant_id=user.tenant_id, user_id=user.id)) - 1
    if Role(user.role) in MFA_REQUIRED_ROLES and not user.totp_enabled and others == 0:
        raise Conflict(
            "this is your only second factor and your role requires one: "
            "add another passkey or set up an authenticator app first"
        )
    session.delete(passkey)
    session.flush()
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.webauthn_delete",
        object_type="passkey",
        object_id=passkey_id,
    )
