"""Request authentication for the API and the console, shared by both.

A request acts as an API key (``Authorization: Bearer cp_...``) or as a console
session (cookie ``carepost_session``). Cookie-authenticated unsafe requests must
present the session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form
field): a cross-site form post can send the cookie but cannot read the token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from carepost.accounts import apikeys, sessions
from carepost.accounts.permissions import permissions_for
from carepost.accounts.principal import Principal
from carepost.audit.service import Actor
from carepost.core.errors import AuthenticationFailed, PermissionDenied
from carepost.core.runtime import Runtime

SESSION_COOKIE = "carepost_session"
CSRF_HEADER = "x-csrf-token"
# Console posts whose body is a file streamed by the route (the import wizard's upload):
# never parsed as a form here (that would spool the file to disk); they send the header.
STREAMED_FORMS = frozenset({"/imports/upload"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Credentials:
    """What a request presented, read from headers, cookies and (for posts) the form."""

    method: str
    bearer: str | None
    session_token: str | None
    csrf_token: str | None
    client_address: str


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def read_credentials(request: Request) -> Credentials:
    authorization = request.headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    csrf = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    # API calls send the token in the header: their bodies (a multi-gigabyte import
    # upload, say) are streamed by the route, never parsed (and spooled) here.
    if (
        csrf is None
        and bearer is None
        and request.method not in SAFE_METHODS
        and not request.url.path.startswith("/api/")
        and request.url.path not in STREAMED_FORMS
        and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
    ):
        form = await request.form()
        value = form.get("csrf_token")
        csrf = value if isinstance(value, str) else None
    return Credentials(
        method=request.method,
        bearer=bearer,
        session_token=request.cookies.get(SESSION_COOKIE),
        csrf_token=csrf,
        client_address=client_address(request),
    )


def authenticate(
    runtime: Runtime, credentials: Credentials, *, allow_pending: bool = False
) -> Principal:
    """Resolve credentials to a Principal, or raise AuthenticationFailed/PermissionDenied.

    ``allow_pending`` admits a session that passed the password but not yet MFA or a
    forced password change (the console's enrolment and change-password pages).
    """
    with runtime.database.session() as session:
        if credentials.bearer is not None:
            key, tenant = apikeys.authenticate_api_key(session, credentials.bearer)
            keys = runtime.keyring.load(session, tenant.id)
            return Principal(
                tenant_id=tenant.id,
                tenant_slug=tenant.slug,
                actor=Actor(
                    "api_key", str(key.id), f"api key {key.prefix}", credentials.client_address
                ),
                permissions=frozenset(key.scopes),
                keys=keys,
                api_key_id=key.id,
            )
        if not credentials.session_token:
            raise AuthenticationFailed("sign in, or send an API key as 'Authorization: Bearer'")
        try:
            row, user, tenant = sessions.resolve_session(session, credentials.session_token)
        except AuthenticationFailed:
            # An expired session is revoked and audited on the way out; keep that
            # record although the request fails (the unit of work would roll it back).
            session.commit()
            raise
        if credentials.method not in SAFE_METHODS and not (
            credentials.csrf_token
            and secrets.compare_digest(credentials.csrf_token, row.csrf_token)
        ):
            raise PermissionDenied("the CSRF token is missing or wrong; reload the page")
        pending = row.stage != sessions.STAGE_MFA_OK or user.password_must_change
        if pending and not allow_pending:
            raise AuthenticationFailed("finish signing in first (two-factor or new password)")
        keys = runtime.keyring.load(session, tenant.id)
        return Principal(
            tenant_id=tenant.id,
            tenant_slug=tenant.slug,
            actor=Actor("user", str(user.id), user.email, credentials.client_address),
            permissions=frozenset() if pending else permissions_for(user.role),
            keys=keys,
            user_id=user.id,
            role=user.role,
            session_id=row.id,
            csrf_token=row.csrf_token,
        )


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal of this request."""
    credentials = await read_credentials(request)
    principal = await run_in_threadpool(authenticate, get_runtime(request), credentials)
    request.state.principal = principal
    return principal


def require(permission: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """FastAPI dependency factory: an authenticated principal holding ``permission``."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency
