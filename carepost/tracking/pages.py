"""The public tracking routes: ``GET /t/o/{token}`` (the open pixel),
``GET /t/c/{token}`` (the click redirect) and ``GET /t/v/{token}`` (the message's
"view in browser" copy, :mod:`carepost.tracking.view`). No sign-in: the token is the
credential. Each client address is rate limited (:mod:`carepost.tracking.limits`,
setting ``public_rate_per_minute``): past it, a 429 with ``Retry-After``.

The web view renders the stored message under a Content-Security-Policy that runs no
script, submits no form and loads nothing but images, so mail HTML cannot act on the
carepost origin.

They serve no tenant data: the pixel is a constant GIF, and the redirect's target
is the URL sealed in the token by carepost itself (:mod:`carepost.tracking.links`),
so a token that fails its tag -- or any made-up path -- is a plain 404, never a
redirect to a URL of the requester's choosing. Answers are ``no-store`` and send
no referrer. Recording the hit may fail (database down): the recipient still gets
the pixel or the redirect, and the failure is logged without values.
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from carepost.api.deps import client_address, get_runtime
from carepost.core.errors import CryptoError
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import bind_tenant_keys
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.tenancy.models import Tenant
from carepost.tracking import view
from carepost.tracking.limits import ClientRateLimiter
from carepost.tracking.links import TokenKind, TrackedLink, read_token
from carepost.tracking.service import record_hit

router = APIRouter(include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# The smallest transparent 1x1 GIF (43 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
PRIVATE_HEADERS = {
    "Cache-Control": "no-store, private",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}

VIEW_POLICY = (
    "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox allow-popups "
    "allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
)

log = get_logger(__name__)


def _limiter(request: Request, runtime: Runtime) -> ClientRateLimiter:
    """The app's limiter of the public routes (one per application, made on first use)."""
    limiter: ClientRateLimiter | None = getattr(request.app.state, "public_limiter", None)
    if limiter is None:
        limiter = ClientRateLimiter(runtime.settings.public_rate_per_minute)
        request.app.state.public_limiter = limiter
    return limiter


def rate_limited(request: Request, runtime: RuntimeDep) -> Response | None:
    """A 429 answer when this client address has used its requests, else None."""
    limiter = _limiter(request, runtime)
    if limiter.allow(client_address(request) or "-"):
        return None
    log.warning("tracking.rate_limited", path=request.url.path[:4])
    return Response(
        "Too many requests",
        status_code=429,
        media_type="text/plain",
        headers={**PRIVATE_HEADERS, "Retry-After": str(limiter.retry_after())},
    )


Limited = Annotated[Response | None, Depends(rate_limited)]


def _not_found() -> Response:
    return Response("Not found", status_code=404, media_type="text/plain", headers=PRIVATE_HEADERS)


def _record(runtime: Runtime, request: Request, link: TrackedLink) -> None:
    try:
        record_hit(
            runtime,
            link,
            user_agent=request.headers.get("user-agent"),
            client_ip=client_address(request) or None,
        )
    except Exception as exc:  # noqa: BLE001 - the recipient must not see our failure
        # ... but the operator must: logged by type only (a driver error may quote values).
        log.error("tracking.record_failed", kind=link.kind.value, error=type(exc).__name__)


def _link(runtime: Runtime, token: str, kind: TokenKind) -> TrackedLink | None:
    link = read_token(token, secret=cached_feedback_secret(runtime.settings))
    return link if link is not None and link.kind is kind else None


@router.get("/t/o/{token}")
def open_pixel(token: str, request: Request, runtime: RuntimeDep, limited: Limited) -> Response:
    if limited is not None:
        return limited
    link = _link(runtime, token, TokenKind.OPEN)
    if link is None:
        return _not_found()
    _record(runtime, request, link)
    return Response(PIXEL, media_type="image/gif", headers=PRIVATE_HEADERS)


@router.get("/t/c/{token}")
def click_redirect(token: str, request: Request, runtime: RuntimeDep, limited: Limited) -> Response:
    if limited is not None:
        return limited
    link = _link(runtime, token, TokenKind.CLICK)
    if link is None or link.url is None:
        return _not_found()
    _record(runtime, request, link)
    return RedirectResponse(link.url, status_code=302, headers=PRIVATE_HEADERS)


def _stored_copy(runtime: Runtime, token: str) -> tuple[str, str, str] | None:
    """(subject, html, text) of the message a valid, unexpired token names, or None."""
    # Imported here: the outbox imports tracking (its ports) when it loads.
    from carepost.messages.models import Message

    tenant_id = view.token_tenant(token)
    if tenant_id is None:
        return None
    with runtime.database.session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.status != "active":
            return None
        try:
            keys = runtime.keyring.load(session, tenant_id)
        except CryptoError:
            return None
        link = view.verify(keys, token)
        if link is None:
            return None
        with bind_tenant_keys(keys):
            row = session.execute(
                select(Message.subject, Message.body).where(
                    Message.id == link.message_id, Message.tenant_id == tenant_id
                )
            ).one_or_none()
            if row is None:
                return None
            subject, body = row
            return str(subject or ""), str(body.get("html") or ""), str(body.get("text") or "")


@router.get("/t/v/{token}")
def view_in_browser(
    token: str, request: Request, runtime: RuntimeDep, limited: Limited
) -> Response:
    """The stored message as its recipient got it (its HTML part, else its text)."""
    if limited is not None:
        return limited
    try:
        copy = _stored_copy(runtime, token)
    except Exception as exc:  # noqa: BLE001 - logged by type only: a driver error may quote values
        log.error("tracking.view_failed", error=type(exc).__name__)
        copy = None
    if copy is None:
        return _not_found()
    subject, body_html, body_text = copy
    if not body_html:
        body_html = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(subject)}"
            f"</title></head><body><pre style='white-space:pre-wrap;font-family:sans-serif'>"
            f"{html.escape(body_text)}</pre></body></html>"
        )
    headers = {**PRIVATE_HEADERS, "Content-Security-Policy": VIEW_POLICY}
    headers["X-Content-Type-Options"] = "nosniff"
    return HTMLResponse(body_html, headers=headers)
