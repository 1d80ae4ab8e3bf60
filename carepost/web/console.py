"""The console's request context: who is signed in, what they may see, how a page renders.

Every console view depends on :func:`page` (a fully signed-in person holding a
permission) or :func:`sign_in_step` (a person part-way through signing in). Both
authenticate the session cookie through :func:`carepost.api.deps.authenticate`, the
same code the API uses, so CSRF, idle timeout and absolute lifetime are enforced
in one place. A request that is not signed in, or whose session expired, is sent
to ``/login`` (``?expired=1`` when a session cookie was presented); a session
part-way through signing in is sent to its next step.

Signing in is a short sequence, and the order is deliberate: verify the factors a
person already has (password, then their authenticator), then replace what must be
replaced (a one-time password), then set up what is missing (the authenticator):
``/login`` → ``/login/mfa`` → ``/password`` → ``/mfa/enrol`` → ``/mfa/recovery-codes``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from carepost.accounts.models import User, UserSession, WebAuthnCredential
from carepost.accounts.permissions import PERMISSIONS
from carepost.accounts.principal import Principal
from carepost.accounts.sessions import STAGE_MFA_OK
from carepost.api.deps import SESSION_COOKIE, authenticate, get_runtime, read_credentials
from carepost.core.config import Settings
from carepost.core.errors import AuthenticationFailed, NotFound
from carepost.core.runtime import Runtime
from carepost.tenancy.models import Tenant

TEMPLATES_DIR = Path(__file__).parent / "templates"
LOGIN = "/login"
LOGIN_EXPIRED = "/login?expired=1"

# Console sections in navigation order: (path, label, permission needed to see it).
NAVIGATION: tuple[tuple[str, str, str | None], ...] = (
    ("/", "Dashboard", None),
    ("/contacts", "Contacts", "contacts:read"),
    ("/lists", "Lists", "contacts:read"),
    ("/contact-fields", "Contact fields", "contacts:read"),
    ("/journey-stages", "Journey stages", "contacts:read"),
    ("/segments", "Segments", "contacts:read"),
    ("/imports", "Imports", "contacts:read"),
    ("/templates", "Email templates", "templates:read"),
    ("/campaigns", "Campaigns", "reports:read"),
    ("/workflows", "Workflows", "workflows:read"),
    ("/messages", "Message log", "reports:read"),
    ("/portal", "Secure portal", "reports:read"),
    ("/domains", "Domains & DKIM", "tenant:read"),
    ("/gateway", "SMTP gateway", "tenant:read"),
    ("/protection-policy", "Protection policy", "policy:read"),
    ("/users", "Users and roles", "users:read"),
    ("/api-keys", "API keys", "apikeys:read"),
    ("/webhooks", "Webhooks", "webhooks:read"),
    ("/audit", "Audit trail", "audit:read"),
    ("/settings", "Organization settings", "tenant:read"),
    ("/account", "My account", None),
)


def format_time(value: datetime | None) -> str:
    """Timestamps are shown in UTC, to the minute, everywhere in the console."""
    if value is None:
        return "never"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def sentence(text: str) -> str:
    """Service messages are lowercase fragments; show them as sentences."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["when"] = format_time
templates.env.filters["sentence"] = sentence
templates.env.globals["PERMISSIONS"] = PERMISSIONS


class ConsoleRedirect(Exception):
    """Stop handling a console request and send the browser to ``location``."""

    def __init__(self, location: str, *, clear_session: bool = False) -> None:
        super().__init__(location)
        self.location = location
        self.clear_session = clear_session


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, location: str, *, clear_session: bool = False) -> Response:
    """A 303 to ``location``; for HTMX requests an ``HX-Redirect`` so the whole page moves
    instead of the target of the swap."""
    response: Response
    if is_htmx(request):
        response = Response(status_code=200, headers={"HX-Redirect": location})
    else:
        response = RedirectResponse(location, status_code=303)
    if clear_session:
        clear_session_cookie(response, get_runtime(request).settings)
    return response


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    # No Max-Age: the cookie dies with the browser; the server enforces idle and absolute
    # limits. SameSite=Strict keeps it off every cross-site request.
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="strict"
    )


@dataclass(frozen=True)
class Account:
    """The signed-in person as the console shows them (never secrets)."""

    user_id: uuid.UUID
    email: str
    name: str
    role: str
    totp_enabled: bool
    has_passkey: bool
    password_must_change: bool
    session_stage: str
    tenant_name: str

    @property
    def next_step(self) -> str | None:
        """Where this session must go before it may use the console, if anywhere."""
        if self.session_stage != STAGE_MFA_OK:
            if self.totp_enabled or self.has_passkey:
                return "/login/mfa"
            if self.password_must_change:
                return "/password"
            return "/mfa/enrol"
        if self.password_must_change:
            return "/password"
        return None


def load_account(session: Session, principal: Principal) -> Account:
    row = session.execute(
        select(
            User.id,
            User.email,
            User.name,
            User.role,
            User.totp_enabled,
            select(WebAuthnCredential.id)
            .where(WebAuthnCredential.user_id == UserSession.user_id)
            .exists(),
            User.password_must_change,
            UserSession.stage,
            Tenant.name,
        )
        .join(User, User.id == UserSession.user_id)
        .join(Tenant, Tenant.id == UserSession.tenant_id)
        .where(
            UserSession.id == principal.session_id,
            UserSession.tenant_id == principal.tenant_id,
        )
    ).one()
    return Account(*row)


@dataclass(frozen=True)
class Console:
    """One console request: the person, their organization, and how to answer them."""

    request: Request
    runtime: Runtime
    principal: Principal
    account: Account

    @property
    def htmx(self) -> bool:
        return is_htmx(self.request)

    @property
    def csrf_token(self) -> str:
        return self.principal.csrf_token or ""

    def can(self, permission: str) -> bool:
        return self.principal.can(permission)

    def session(self) -> AbstractContextManager[Session]:
        """A unit of work for this organization, its keys bound for encrypted columns."""
        return self.runtime.bound_session(self.principal.keys)

    def navigation(self) -> Iterator[tuple[str, str, bool]]:
        """(path, label, current) for each section this person may see."""
        path = self.request.url.path
        for href, label, permission in NAVIGATION:
            if permission is None or self.can(permission):
                current = path == href if href == "/" else path.startswith(href)
                yield href, label, current

    def render(
        self,
        template: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        return render(
            self.request, template, status=status, headers=headers, console=self, **context
        )


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page or partial. ``console`` is None on pages shown before sign-in."""
    context.setdefault("console", None)
    return templates.TemplateResponse(
        request, template, context, status_code=status, headers=headers
    )


def parse_id(value: str) -> uuid.UUID:
    """An object id from a URL; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such object") from None


async def authenticated(request: Request) -> Console:
    """FastAPI dependency: any live session, signed in or part-way through signing in."""
    runtime = get_runtime(request)
    # The console is for people: an API key is not a console sign-in.
    credentials = dataclasses.replace(await read_credentials(request), bearer=None)
    try:
        principal = await run_in_threadpool(authenticate, runtime, credentials, allow_pending=True)
    except AuthenticationFailed:
        if credentials.session_token:
            raise ConsoleRedirect(LOGIN_EXPIRED, clear_session=True) from None
        raise ConsoleRedirect(LOGIN) from None

    def load() -> Account:
        with runtime.database.session() as session:
            return load_account(session, principal)

    console = Console(request, runtime, principal, await run_in_threadpool(load))
    request.state.console = console
    return console


async def signed_in(request: Request) -> Console:
    """FastAPI dependency: a person who has finished signing in."""
    console = await authenticated(request)
    step = console.account.next_step
    if step is not None:
        raise ConsoleRedirect(step)
    return console


def page(permission: str | None = None) -> Callable[[Request], Coroutine[Any, Any, Console]]:
    """FastAPI dependency factory: a signed-in person holding ``permission`` (else 403)."""

    async def dependency(request: Request) -> Console:
        console = await signed_in(request)
        if permission is not None:
            console.principal.require(permission)
        return console

    dependency.__name__ = f"page_{(permission or 'any').replace(':', '_')}"
    return dependency


def sign_in_step(
    *steps: str, or_signed_in: bool = False
) -> Callable[[Request], Coroutine[Any, Any, Console]]:
    """FastAPI dependency factory for the pages of the sign-in sequence: admits a session
    whose next step is one of ``steps`` (and, with ``or_signed_in``, a finished one);
    any other session is sent where it belongs."""

    async def dependency(request: Request) -> Console:
        console = await authenticated(request)
        step = console.account.next_step
        if step in steps or (step is None and or_signed_in):
            return console
        raise ConsoleRedirect(step or "/")

    dependency.__name__ = "sign_in_step_" + "_".join(s.strip("/").replace("/", "_") for s in steps)
    return dependency


async def form_data(request: Request) -> dict[str, str | list[str]]:
    """FastAPI dependency: the posted form, one string per field (a list when repeated)."""
    form = await request.form()
    data: dict[str, str | list[str]] = {}
    for key in form:
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        data[key] = values if len(values) > 1 else (values[0] if values else "")
    return data
