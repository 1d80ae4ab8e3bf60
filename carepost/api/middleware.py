"""ASGI middleware: request ids, access logs without PHI, metrics, body size limits,
and security headers."""

from __future__ import annotations

import secrets
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carepost.api.problems import PROBLEM_JSON
from carepost.core.logging import get_logger

log = get_logger("carepost.http")

REQUESTS = Counter(
    "carepost_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
LATENCY = Histogram(
    "carepost_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"cache-control", b"no-store"),
]


def route_template(scope: Scope) -> str:
    """The template of the route that served a request (/api/v1/users/{user_id}), never
    the concrete path: ids and tokens stay out of metrics and logs.

    FastAPI routes included from routers keep their own, prefix-less path on
    ``scope["route"]``; the full template is on FastAPI's effective route context.
    """
    context: Any = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return str(template or "unmatched")


class RequestGuard:
    """Assigns a request id, enforces the body size limit, adds headers, logs and counts."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        hsts: bool,
        upload_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.hsts = hsts
        # POST paths that stream big bodies (import uploads), with their own limit.
        self.upload_limits = upload_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        headers = dict(scope.get("headers") or [])
        limit = self.max_body_bytes
        if scope["method"] == "POST":
            limit = self.upload_limits.get(scope["path"], limit)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            self._finish(scope, 413, started, request_id)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer 413 here and let the application see the client leave:
                    # an exception raised from receive() would be turned into a 400
                    # by the framework's body parsing.
                    if not status_holder["started"]:
                        await self._too_large(guarded_send, limit)
                    too_large = True
                    status_holder["status"] = 413
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if too_large:
                return  # the 413 is out; the application's late answer is dropped
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                extra = list(SECURITY_HEADERS)
                extra.append((b"x-request-id", request_id.encode()))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                existing = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in existing
                ]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            self._finish(scope, int(status_holder["status"]), started, request_id)
            structlog.contextvars.unbind_contextvars("request_id")

    async def _too_large(self, send: Send, limit: int) -> None:
        body = (
            b'{"type":"https://carepost.dev/problems/request-too-large",'
            b'"title":"Request too large",'
            b'"status":413,"detail":"the request body exceeds ' + str(limit).encode() + b' bytes"}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _finish(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        template = route_template(scope)
        elapsed = time.perf_counter() - started
        REQUESTS.labels(scope["method"], template, str(status)).inc()
        LATENCY.labels(scope["method"], template).observe(elapsed)
        log.info(
            "http_request",
            method=scope["method"],
            route=template,
            status_code=status,
            duration_ms=round(elapsed * 1000, 2),
            request_id=request_id,
        )
