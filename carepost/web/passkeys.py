"""Passkeys in the console: signing in with one on ``/login/mfa``, adding one (in My
account, or instead of an authenticator app during enrolment), renaming and removing.

The WebAuthn ceremonies run in the browser (``static/passkeys.js``): it fetches the
options from a JSON endpoint here, calls ``navigator.credentials``, and posts the
answer back as JSON with the session's CSRF token in ``X-CSRF-Token``. The answers
are JSON too: ``{"redirect": "/..."}`` on success, ``{"error": "..."}`` otherwise.
Renaming and removing are ordinary forms. The checks themselves are in
:mod:`carepost.accounts.webauthn`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from carepost.accounts import service as accounts
from carepost.accounts import sessions
from carepost.accounts import webauthn as passkeys
from carepost.core.database import utcnow
from carepost.core.errors import (
    AuthenticationFailed,
    CarepostError,
    Conflict,
    RateLimited,
    ValidationFailed,
)
from carepost.web.account import render_account
from carepost.web.console import (
    Console,
    form_data,
    parse_id,
    redirect,
    sentence,
    set_session_cookie,
    sign_in_step,
)
from carepost.web.console import page as signed_in_page
from carepost.web.credentials import ENROL_STEP
from carepost.web.forms import FormData
from carepost.web.signin import finish_sign_in, lockout_message, next_location

router = APIRouter(include_in_schema=False)

MFA_STEP = sign_in_step("/login/mfa")
ADDED = "/account?done=passkey-added#passkeys"


async def json_body(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the posted JSON object (the request size is limited upstream)."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValidationFailed("send a JSON object")
    return body


def _credential(body: dict[str, Any]) -> dict[str, Any]:
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise ValidationFailed("the browser's passkey answer is missing", field="credential")
    return credential


def _error(exc: CarepostError) -> JSONResponse:
    if isinstance(exc, RateLimited):
        return JSONResponse(
            {"error": lockout_message(exc)},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return JSONResponse({"error": sentence(exc.detail)}, status_code=exc.status)


def _session_id(console: Console) -> uuid.UUID:
    if console.principal.session_id is None:  # the console only admits sessions
        raise AuthenticationFailed("please sign in")
    return console.principal.session_id


def _relying_party(console: Console) -> passkeys.RelyingParty:
    return passkeys.relying_party(console.runtime.settings.base_url)


# --- signing in ----------------------------------------------------------------------


@router.post("/login/mfa/passkey/options")
def sign_in_options(console: Annotated[Console, Depends(MFA_STEP)]) -> Response:
    try:
        with console.session() as session:
            user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
            options = passkeys.authentication_options(
                session, rp=_relying_party(console), user=user, session_id=_session_id(console)
            )
    except Conflict as exc:
        return _error(exc)
    return JSONResponse(options)


@router.post("/login/mfa/passkey")
def sign_in_with_passkey(
    console: Annotated[Console, Depends(MFA_STEP)],
    body: Annotated[dict[str, Any], Depends(json_body)],
) -> Response:
    failure: CarepostError | None = None
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        try:
            passkeys.verify_passkey(
                session,
                rp=_relying_party(console),
                user=user,
                session_id=_session_id(console),
                response=_credential(body),
                actor=console.principal.actor,
            )
        except (AuthenticationFailed, RateLimited, ValidationFailed) as exc:
            failure = exc  # committed: the failure counts toward the lockout
        else:
            token, account = finish_sign_in(session, console, user)
    if failure is not None:
        return _error(failure)
    response = JSONResponse({"redirect": next_location(account)})
    set_session_cookie(response, token, console.runtime.settings)
    return response


# --- adding a passkey ------------------------------------------------------------------


@router.post("/account/passkeys/options")
def registration_options(console: Annotated[Console, Depends(ENROL_STEP)]) -> Response:
    try:
        with console.session() as session:
            user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
            options = passkeys.registration_options(
                session, rp=_relying_party(console), user=user, session_id=_session_id(console)
            )
    except Conflict as exc:
        return _error(exc)
    return JSONResponse(options)


@router.post("/account/passkeys")
def add_passkey(
    console: Annotated[Console, Depends(ENROL_STEP)],
    body: Annotated[dict[str, Any], Depends(json_body)],
) -> Response:
    """Store a new passkey. During enrolment (a role that needs a second factor, none set
    up yet) the passkey is that second factor and this finishes signing in."""
    failure: CarepostError | None = None
    token: str | None = None
    location = ADDED
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        try:
            passkeys.register_passkey(
                session,
                rp=_relying_party(console),
                user=user,
                session_id=_session_id(console),
                response=_credential(body),
                name=str(body.get("name") or ""),
                actor=console.principal.actor,
            )
        except (AuthenticationFailed, Conflict, ValidationFailed) as exc:
            failure = exc  # committed: the challenge is used up and the failure audited
        else:
            if console.account.session_stage != sessions.STAGE_MFA_OK:
                user.last_sign_in_at = utcnow()
                token, account = finish_sign_in(session, console, user)
                location = next_location(account)
    if failure is not None:
        return _error(failure)
    response = JSONResponse({"redirect": location})
    if token is not None:
        set_session_cookie(response, token, console.runtime.settings)
    return response


# --- renaming and removing ---------------------------------------------------------------


@router.post("/account/passkeys/{passkey_id}")
def rename_passkey(
    passkey_id: str,
    console: Annotated[Console, Depends(signed_in_page())],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    try:
        with console.session() as session:
            user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
            passkeys.rename_passkey(
                session,
                user=user,
                passkey_id=parse_id(passkey_id),
                name=str(data.get("name", "")),
                actor=console.principal.actor,
            )
    except ValidationFailed as exc:
        return render_account(console, status=exc.status, passkey_error=sentence(exc.detail))
    return redirect(console.request, "/account?done=passkey-renamed#passkeys")


@router.post("/account/passkeys/{passkey_id}/delete")
def delete_passkey(
    passkey_id: str, console: Annotated[Console, Depends(signed_in_page())]
) -> Response:
    try:
        with console.session() as session:
            user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
            passkeys.delete_passkey(
                session, user=user, passkey_id=parse_id(passkey_id), actor=console.principal.actor
            )
    except Conflict as exc:
        return render_account(console, status=exc.status, passkey_error=sentence(exc.detail))
    return redirect(console.request, "/account?done=passkey-removed#passkeys")
