"""The public tracking routes: ``GET /t/o/{token}`` (the open pixel) and
``GET /t/c/{token}`` (the click redirect). No sign-in: the token is the credential.

They serve no tenant data: the pixel is a constant GIF, and the redirect's target
is the URL sealed in the token by carepost itself (:mod:`carepost.tracking.links`),
so a token that fails its tag -- or any made-up path -- is a plain 404, never a
redirect to a URL of the requester's choosing. Answers are ``no-store`` and send
no referrer. Recording the hit may fail (database down): the recipient still gets
the pixel or the redirect, and the failure is logged without values.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from carepost.api.deps import client_address, get_runtime
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.delivery.feedback_keys import cached_feedback_secret
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

log = get_logger(__name__)


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
def open_pixel(token: str, request: Request, runtime: RuntimeDep) -> Response:
    link = _link(runtime, token, TokenKind.OPEN)
    if link is None:
        return _not_found()
    _record(runtime, request, link)
    return Response(PIXEL, media_type="image/gif", headers=PRIVATE_HEADERS)


@router.get("/t/c/{token}")
def click_redirect(token: str, request: Request, runtime: RuntimeDep) -> Response:
    link = _link(runtime, token, TokenKind.CLICK)
    if link is None or link.url is None:
        return _not_found()
    _record(runtime, request, link)
    return RedirectResponse(link.url, status_code=302, headers=PRIVATE_HEADERS)
