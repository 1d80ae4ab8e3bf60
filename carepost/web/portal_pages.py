"""The recipient's side of the portal: ``/s/{token}``, opened from the notice email.

No sign-in: the random token in the link finds the item (only its SHA-256 is
stored), and proof of identity is a one-time code emailed to the recipient's
address (or the password they registered). A proven visit gets a short-lived
cookie scoped to the item's path and signed with the tenant's index key; it
names the item and the item's session epoch, so a recall ends it at once. Every
POST carries a CSRF token bound to a per-browser random cookie (double submit,
keyed). Unknown links answer 404; recalled or expired items 410 without content.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.api.deps import client_address, get_runtime
from carepost.core.database import utcnow
from carepost.core.errors import CryptoError, ValidationFailed
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.portal import content as portal_content
from carepost.portal import reply_files, service
from carepost.portal.models import PortalItem
from carepost.tenancy.models import Tenant
from carepost.web.console import render

router = APIRouter(include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SESSION_COOKIE = "carepost_portal"
CSRF_COOKIE = "carepost_portal_csrf"
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class Visit:
    """One request on an item: its row (keys bound), branding and whether it is proven."""

    request: Request
    runtime: Runtime
    session: Session
    keys: TenantKeys
    item: PortalItem
    brand: service.Branding
    token: str
    now: datetime
    nonce: str

    @property
    def base(self) -> str:
        return f"/s/{self.token}"

    @property
    def client(self) -> str:
        return client_address(self.request)

    def csrf(self) -> str:
        return self.keys.blind_index("portal.csrf", f"{self.item.id}:{self.nonce}")

    def csrf_ok(self, presented: str) -> bool:
        return bool(self.request.cookies.get(CSRF_COOKIE)) and secrets.compare_digest(
            presented or "", self.csrf()
        )

    def _signature(self, expires: int) -> str:
        return self.keys.blind_index(
            "portal.session", f"{self.item.id}:{self.item.session_epoch}:{expires}"
        )

    def session_value(self) -> str:
        expires = int(time.time() + service.SESSION_LIFETIME.total_seconds())
        return f"{expires}.{self._signature(expires)}"

    def proven(self) -> bool:
        value = self.request.cookies.get(SESSION_COOKIE, "")
        expires, _, signature = value.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return secrets.compare_digest(signature, self._signature(int(expires)))

    def page(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        response = render(
            self.request,
            template,
            status=status,
            title="Secure message",
            brand=self.brand,
            base=self.base,
            csrf_token=self.csrf(),
            **context,
        )
        self.keep_nonce(response)
        return response

    def keep_nonce(self, response: Response) -> None:
        if self.request.cookies.get(CSRF_COOKIE) != self.nonce:
            response.set_cookie(
                CSRF_COOKIE,
                self.nonce,
                httponly=True,
                secure=self.runtime.settings.cookie_secure,
                samesite="strict",
                path=self.base,
            )


def _gone(request: Request, brand: service.Branding | None, recalled: bool) -> HTMLResponse:
    return render(
        request,
        "portal/gone.html",
        status=410,
        title="Message no longer available",
        brand=brand,
        recalled=recalled,
    )


def _invalid(request: Request) -> HTMLResponse:
    return render(request, "portal/invalid.html", status=404, title="Link not valid", brand=None)


class _Stop(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


@contextmanager
def _visit(request: Request, runtime: Runtime, token: str, *, live: bool = True) -> Iterator[Visit]:
    """The item of a link, its keys bound, in one unit of work; stops with 404 or 410."""
    with runtime.database.session() as session:
        found = service.find_item_tenant(session, token)
        if found is None:
            raise _Stop(_invalid(request))
        item_id, tenant_id = found
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.status != "active":
            raise _Stop(_invalid(request))
        try:
            keys = runtime.keyring.load(session, tenant_id)
        except CryptoError:
            raise _Stop(_invalid(request)) from None
        with bind_tenant_keys(keys):
            item = session.scalar(select(PortalItem).where(PortalItem.id == item_id))
            assert item is not None
            brand = service.branding(session, tenant_id)
            now = utcnow()
            if live and service.is_gone(item, now):
                raise _Stop(_gone(request, brand, item.recalled_at is not None))
            nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(18)
            yield Visit(request, runtime, session, keys, item, brand, token, now, nonce)


def _run(request: Request, runtime: Runtime, token: str, handler: Any) -> Response:
    try:
        with _visit(request, runtime, token) as visit:
            result: Response = handler(visit)
            visit.session.flush()
            return result
    except _Stop as stop:
        return stop.response


def _access_page(visit: Visit, *, status: int = 200, **context: Any) -> HTMLResponse:
    item = visit.item
    context.setdefault("locked", service.is_locked(item, visit.now))
    return visit.page(
        "portal/access.html",
        status=status,
        has_password=bool(item.password_hash),
        question=item.question if item.answer_hash else None,
        **context,
    )


def _read_page(visit: Visit, *, status: int = 200, **context: Any) -> HTMLResponse:
    content = visit.item.content or {}
    html = content.get("html")
    context.setdefault("field_errors", {})
    return visit.page(
        "portal/read.html",
        status=status,
        sent=service.sent_replies(visit.session, visit.item),
        limits=reply_files,
        subject=content.get("subject") or "",
        html=portal_content.sanitize_html(html) if html else "",
        text=content.get("text") or "",
        attachments=portal_content.attachment_meta(content),
        expires_at=visit.item.expires_at,
        has_password=bool(visit.item.password_hash),
        **context,
    )


def _forbidden(visit: Visit) -> HTMLResponse:
    return _access_page(
        visit, status=403, error="This form expired. Please try again.", code_sent=False
    )


@router.get("/s/{token}")
def open_item(request: Request, token: str, runtime: RuntimeDep) -> Response:
    def handle(visit: Visit) -> Response:
        if visit.proven():
            return _read_page(visit)
        return _access_page(visit, code_sent=request.query_params.get("sent") == "1")

    return _run(request, runtime, token, handle)


@router.get("/s/{token}/brand.css")
def brand_css(request: Request, token: str, runtime: RuntimeDep) -> Response:
    """The tenant's colour, and the portal's own few rules, as a stylesheet (the CSP
    allows no inline styles)."""
    try:
        with _visit(request, runtime, token, live=False) as visit:
            color = visit.brand.brand_color
    except _Stop:
        color = "#0b5394"
    if not _COLOR.match(color):
        color = "#0b5394"
    css = (
        f":root {{ --primary: {color}; --primary-hover: {color}; }}\n"
        f".portal__brand {{ border-top: 6px solid {color}; }}\n"
        # Plain-text bodies and replies wrap on a phone instead of running off the page.
        ".portal__text { white-space: pre-wrap; overflow-wrap: anywhere; }\n"
        ".portal__sent, .portal__sent ul { padding-left: 1.25rem; }\n"
    )
    return Response(css, media_type="text/css")


@router.post("/s/{token}/code")
def request_code(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    def handle(visit: Visit) -> Response:
        if not visit.csrf_ok(csrf_token):
            return _forbidden(visit)
        try:
            service.send_code(visit.session, visit.item, now=visit.now, client_address=visit.client)
        except service.ClientThrottled:
            return _access_page(
                visit, status=429, code_sent=False, locked=True, error=_VERIFY_ERRORS["throttled"]
            )
        except service.Throttled as throttled:
            return _access_page(
                visit,
                status=429,
                code_sent=False,
                locked=throttled.until is not None,
                error="Too many codes were asked for. Please wait an hour and try again."
                if throttled.until is None
                else "Too many wrong attempts. This message is locked for 15 minutes.",
            )
        response = RedirectResponse(f"{visit.base}?sent=1", status_code=303)
        visit.keep_nonce(response)
        return response

    return _run(request, runtime, token, handle)


def _proven_redirect(visit: Visit) -> Response:
    response = RedirectResponse(visit.base, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        visit.session_value(),
        max_age=int(service.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        secure=visit.runtime.settings.cookie_secure,
        samesite="strict",
        path=visit.base,
    )
    return response


_VERIFY_ERRORS = {
    "wrong": "That code is not right. Check the latest email and try again.",
    "expired": "That code has expired or was already used. Ask for a new code.",
    "locked": "Too many wrong attempts. This message is locked for 15 minutes.",
    "throttled": "Too many attempts were made from your network. "
    "Please wait 15 minutes and try again.",
}
_REFUSED = ("locked", "throttled")


def _sign_in(
    visit: Visit, csrf_token: str, check: Callable[..., str], secret: str, wrong: str | None
) -> Response:
    """The three ways in (a code, a password, the sender's question) answer alike: a
    session on success; else the access page with the outcome (``wrong``: the message
    for a wrong password or answer; codes say "wrong" or "expired" themselves)."""
    if not visit.csrf_ok(csrf_token):
        return _forbidden(visit)
    outcome = check(visit.session, visit.item, secret, now=visit.now, client_address=visit.client)
    if outcome == "ok":
        return _proven_redirect(visit)
    refused = outcome in _REFUSED
    return _access_page(
        visit,
        status=429 if refused else 400,
        code_sent=wrong is None and outcome != "expired",
        locked=refused,
        error=_VERIFY_ERRORS[outcome] if refused or wrong is None else wrong,
    )


@router.post("/s/{token}/verify")
def verify_code(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    code: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    return _run(
        request, runtime, token, lambda v: _sign_in(v, csrf_token, service.verify_code, code, None)
    )


@router.post("/s/{token}/password")
def sign_in_password(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    password: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    wrong = "That password is not right."
    return _run(
        request,
        runtime,
        token,
        lambda v: _sign_in(v, csrf_token, service.verify_password, password, wrong),
    )


@router.post("/s/{token}/answer")
def answer_question(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    answer: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    wrong = "That answer is not right."
    return _run(
        request,
        runtime,
        token,
        lambda v: _sign_in(v, csrf_token, service.verify_answer, answer, wrong),
    )


def _proven_or_access(visit: Visit) -> Response | None:
    if not visit.proven():
        return _access_page(
            visit, status=401, code_sent=False, error="Please confirm it is you first."
        )
    return None


def _refused_post(visit: Visit, csrf_token: str) -> Response | None:
    """A POST on the open message: a proven visit with a good CSRF token, or the answer."""
    refused = _proven_or_access(visit)
    if refused is None and not visit.csrf_ok(csrf_token):
        refused = _read_page(visit, error="This form expired. Please try again.")
    return refused


@router.get("/s/{token}/attachments/{index}")
def download(request: Request, token: str, index: int, runtime: RuntimeDep) -> Response:
    def handle(visit: Visit) -> Response:
        refused = _proven_or_access(visit)
        if refused is not None:
            return refused
        found = service.attachment(
            visit.session, visit.item, index, now=visit.now, client_address=visit.client
        )
        if found is None:
            return _invalid(request)
        data = base64.b64decode(found.get("content", ""))
        filename = re.sub(r"[^A-Za-z0-9._ -]", "_", found.get("filename") or "attachment")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return _run(request, runtime, token, handle)


def _uploads(files: list[UploadFile] | None) -> list[reply_files.Upload]:
    """The posted files, each read to one byte past the limit (enough to refuse it)."""
    return [
        reply_files.Upload(f.filename or "", f.file.read(reply_files.MAX_FILE_BYTES + 1))
        for f in (files or [])[: reply_files.MAX_FILES + 1]
    ]


@router.post("/s/{token}/reply")
def send_reply(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    reply: Annotated[str, Form(max_length=service.MAX_REPLY + 1000)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    def handle(visit: Visit) -> Response:
        refused = _refused_post(visit, csrf_token)
        if refused is not None:
            return refused
        try:
            service.reply(
                visit.session,
                visit.item,
                reply,
                now=visit.now,
                base_url=visit.runtime.settings.base_url,
                client_address=visit.client,
                files=_uploads(files),
            )
        except ValidationFailed as exc:
            return _read_page(
                visit,
                status=400,
                error="Your reply was not sent: " + exc.detail + ".",
                field_errors={e.field: e.message for e in reversed(exc.errors)},
                reply_text=reply,
            )
        return _read_page(visit, notice="Your reply was sent securely.")

    return _run(request, runtime, token, handle)


@router.post("/s/{token}/set-password")
def set_password(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    password: Annotated[str, Form(max_length=200)] = "",
    confirm: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    def handle(visit: Visit) -> Response:
        refused = _refused_post(visit, csrf_token)
        if refused is not None:
            return refused
        if password != confirm:
            return _read_page(visit, password_error="The two passwords are not the same.")
        try:
            service.set_password(
                visit.session, visit.item, password, now=visit.now, client_address=visit.client
            )
        except ValidationFailed as exc:
            return _read_page(visit, password_error=f"{exc}".capitalize() + ".")
        return _read_page(visit, notice="Your password is set. Use it next time instead of a code.")

    return _run(request, runtime, token, handle)
