"""Signing in and out of the console: organization, email and password, then the second
factor (a TOTP code or a recovery code; a passkey is checked by :mod:`carepost.web.passkeys`),
and sign-out (here, or everywhere). Setting up
credentials on the way (new password, authenticator) is in :mod:`carepost.web.credentials`.

The order of the steps is explained in :mod:`carepost.web.console`. Failed attempts
are committed (they count toward the lockout and are audited) before the form is
shown again; the messages never say whether an organization or an email exists.
The sign-in form carries its own CSRF token (a cookie and a hidden field that must
match), so another site cannot sign a browser into an account of its choosing.
"""

from __future__ import annotations

import math
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from carepost.accounts import service as accounts
from carepost.accounts import sessions, totp
from carepost.accounts import webauthn as passkeys
from carepost.accounts.models import User, UserSession
from carepost.accounts.passwords import verify_password
from carepost.api.deps import SESSION_COOKIE, client_address, get_runtime
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import (
    AuthenticationFailed,
    CarepostError,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from carepost.core.runtime import Runtime
from carepost.tenancy import service as tenancy
from carepost.web.console import (
    Account,
    Console,
    ConsoleRedirect,
    authenticated,
    form_data,
    redirect,
    render,
    set_session_cookie,
    sign_in_step,
)
from carepost.web.forms import BoundForm, Field, FormData, FormSpec

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "carepost_login_csrf"
WRONG_CREDENTIALS = "the organization, email or password is not right"

LOGIN_FORM = FormSpec(
    id="login",
    submit="Sign in",
    fields=(
        Field(
            "organization",
            "Organization",
            hint="The short name of your organization, for example acme-health.",
            required=True,
            autocomplete="organization",
            attrs={"autocapitalize": "none", "spellcheck": "false"},
        ),
        Field("email", "Email address", "email", required=True, autocomplete="username"),
        Field("password", "Password", "password", required=True, autocomplete="current-password"),
    ),
)
CODE_FIELD = Field(
    "code",
    "Code",
    hint="The 6-digit code from your authenticator app, or one of your recovery codes.",
    required=True,
    autocomplete="one-time-code",
    sensitive=True,
    attrs={"autocapitalize": "none", "spellcheck": "false"},
)
MFA_FORM = FormSpec(id="mfa", submit="Verify", fields=(CODE_FIELD,))
MFA_TITLE = "Two-factor sign-in"
LOGIN_NOTICES = {
    "expired": "Your session ended after a period of inactivity or at its time limit. "
    "Sign in again to continue.",
    "signed_out": "You are signed out.",
    "signed_out_all": "You are signed out on every device.",
}


def lockout_message(exc: RateLimited) -> str:
    minutes = max(1, math.ceil(exc.retry_after / 60))
    until = utcnow() + timedelta(seconds=exc.retry_after)
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"Too many failed attempts: signing in to this account is paused. "
        f"Try again in {minutes} {unit} (after {until:%H:%M} UTC)."
    )


def _fail(form: BoundForm, exc: CarepostError) -> tuple[int, dict[str, str] | None]:
    """Put a sign-in failure on the form; the status and headers to answer with."""
    if isinstance(exc, RateLimited):
        form.add_error(None, lockout_message(exc))
        return 429, {"Retry-After": str(exc.retry_after)}
    form.failed(exc)
    return exc.status, None


def account_of(user: User, stage: str, tenant_name: str, *, has_passkey: bool) -> Account:
    return Account(
        user.id,
        user.email,
        user.name,
        user.role,
        user.totp_enabled,
        has_passkey,
        user.password_must_change,
        stage,
        tenant_name,
    )


def next_location(account: Account) -> str:
    return account.next_step or "/"


# --- /login ------------------------------------------------------------------------


def _login_page(
    request: Request, form: BoundForm, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    token = secrets.token_urlsafe(24)
    notice = ""
    if request.query_params.get("expired"):
        notice = LOGIN_NOTICES["expired"]
    elif signed_out := request.query_params.get("signed_out"):
        notice = LOGIN_NOTICES["signed_out_all" if signed_out == "all" else "signed_out"]
    response = render(
        request,
        "login.html",
        status=status,
        headers=headers,
        form=form,
        login_csrf=token,
        notice=notice,
        title="Sign in",
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        secure=get_runtime(request).settings.cookie_secure,
        samesite="strict",
        path="/login",
    )
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    if request.cookies.get(SESSION_COOKIE):
        try:
            console = await authenticated(request)
        except ConsoleRedirect:
            pass
        else:
            return redirect(request, next_location(console.account))
    organization = request.query_params.get("organization", "")[:63]
    return _login_page(request, LOGIN_FORM.bind(organization=organization))


def password_sign_in(
    runtime: Runtime,
    *,
    organization: str,
    email: str,
    password: str,
    client: str,
    user_agent: str,
) -> tuple[str, Account]:
    """Check the password; open a session (fully signed in when no second factor applies).

    A failure is committed (lockout counter, audit event) before it is raised.
    """
    with runtime.database.session() as session:
        try:
            tenant = tenancy.get_tenant_by_slug(session, organization)
        except NotFound:
            tenant = None
        if tenant is None or tenant.status != "active":
            verify_password(None, password)  # take as long as a wrong password does
            raise AuthenticationFailed(WRONG_CREDENTIALS, field="password")
        keys = runtime.keyring.load(session, tenant.id)
    failure: CarepostError | None = None
    with runtime.bound_session(keys) as session:
        tenant = tenancy.get_tenant(session, keys.tenant_id)
        try:
            user = accounts.authenticate_password(
                session, tenant=tenant, email=email, password=password, client_address=client
            )
        except (AuthenticationFailed, RateLimited) as exc:
            failure = exc
        else:
            has_passkey = passkeys.has_passkey(session, tenant_id=tenant.id, user_id=user.id)
            second_factor = accounts.mfa_required(user, has_passkey=has_passkey)
            stage = sessions.STAGE_PASSWORD_OK if second_factor else sessions.STAGE_MFA_OK
            if not second_factor:
                user.last_sign_in_at = utcnow()
            token, _row = sessions.create_session(
                session,
                user=user,
                tenant=tenant,
                stage=stage,
                client_address=client,
                user_agent=user_agent,
            )
            account = account_of(user, stage, tenant.name, has_passkey=has_passkey)
    if failure is not None:
        if isinstance(failure, AuthenticationFailed) and any(
            e.field == "password" for e in failure.errors
        ):
            raise AuthenticationFailed(WRONG_CREDENTIALS, field="password")
        raise failure
    return token, account


@router.post("/login")
def login(request: Request, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = LOGIN_FORM.bind(data)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    presented = str(data.get("csrf_token", ""))
    if not (expected and presented and secrets.compare_digest(expected, presented)):
        form.add_error(None, "This sign-in form has expired. Please sign in again.")
        return _login_page(request, form, status=403)
    missing = [f.name for f in LOGIN_FORM.fields if not str(data.get(f.name, "")).strip()]
    for name in missing:
        form.add_error(name, f"enter your {LOGIN_FORM.field(name).label.lower()}")
    if missing:
        return _login_page(request, form, status=422)
    runtime = get_runtime(request)
    try:
        token, account = password_sign_in(
            runtime,
            organization=form.value("organization"),
            email=form.value("email"),
            password=str(data.get("password", "")),
            client=client_address(request),
            user_agent=request.headers.get("user-agent", ""),
        )
    except (AuthenticationFailed, RateLimited, ValidationFailed) as exc:
        status, headers = _fail(form, exc)
        return _login_page(request, form, status=status, headers=headers)
    response = redirect(request, next_location(account))
    set_session_cookie(response, token, runtime.settings)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


# --- /login/mfa ----------------------------------------------------------------------


@router.get("/login/mfa")
def mfa_page(console: Annotated[Console, Depends(sign_in_step("/login/mfa"))]) -> Response:
    return console.render("mfa.html", form=MFA_FORM.bind(), title=MFA_TITLE)


@router.post("/login/mfa")
def mfa_verify(
    console: Annotated[Console, Depends(sign_in_step("/login/mfa"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = MFA_FORM.bind(data)
    failure: CarepostError | None = None
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        try:
            totp.verify_second_factor(
                session, user=user, code=str(data.get("code", "")), actor=console.principal.actor
            )
        except (AuthenticationFailed, RateLimited) as exc:
            failure = exc
        else:
            token, account = finish_sign_in(session, console, user)
    if failure is not None:
        status, headers = _fail(form, failure)
        return console.render(
            "mfa.html", status=status, headers=headers, form=form, title=MFA_TITLE
        )
    response = redirect(console.request, next_location(account))
    set_session_cookie(response, token, console.runtime.settings)
    return response


def finish_sign_in(session: Session, console: Console, user: User) -> tuple[str, Account]:
    """Promote the session (a new token: the one seen before the second factor dies)."""
    row = session.get(UserSession, console.principal.session_id)
    if row is None or row.tenant_id != console.principal.tenant_id:
        raise AuthenticationFailed("please sign in")
    token = sessions.promote_session(session, row)
    has_passkey = passkeys.has_passkey(session, tenant_id=user.tenant_id, user_id=user.id)
    return token, account_of(user, row.stage, console.account.tenant_name, has_passkey=has_passkey)


# --- sign-out ------------------------------------------------------------------------------


@router.post("/logout")
def logout(console: Annotated[Console, Depends(authenticated)]) -> Response:
    with console.session() as session:
        row = session.get(UserSession, console.principal.session_id)
        if row is not None and row.tenant_id == console.principal.tenant_id:
            sessions.revoke_session(session, row)
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="auth.sign_out",
            object_type="session",
            object_id=str(console.principal.session_id),
        )
    return redirect(console.request, "/login?signed_out=1", clear_session=True)


@router.post("/logout/everywhere")
def logout_everywhere(console: Annotated[Console, Depends(authenticated)]) -> Response:
    """Sign the current person out of every browser, this one included."""
    with console.session() as session:
        count = sessions.revoke_user_sessions(
            session, tenant_id=console.principal.tenant_id, user_id=console.account.user_id
        )
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="auth.sign_out_everywhere",
            object_type="user",
            object_id=console.account.user_id,
            details={"sessions": count},
        )
    return redirect(console.request, "/login?signed_out=all", clear_session=True)
