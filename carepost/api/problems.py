"""RFC 9457 problem details for every error the API returns.

Each problem has ``type`` (a stable URI per error code), ``title``, ``status``,
``detail`` and, for invalid input, ``errors``: a list of ``{"pointer", "detail"}``
naming the field at fault (JSON Pointer into the request, RFC 6901). Unexpected
errors return a generic 500 with a request id; their details go only to the log.

The same handlers serve the console: an error on a console path (anything outside
``/api/``) asked for by a browser is handed to the HTML error page renderer the
console registers as ``app.state.console_error_page``. The API never gets HTML.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from carepost.core.errors import CarepostError, FieldError, RateLimited
from carepost.core.logging import describe_exception, get_logger

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://carepost.dev/problems/"
API_PATH_PREFIX = "/api/"
log = get_logger("carepost.api")

# The JSON Schema of every problem body, for the OpenAPI document.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI per kind of error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The path of the request"},
        "merged_into": {
            "type": "string",
            "description": "contact-merged problems: the id of the contact it was merged into",
        },
        "errors": {
            "type": "array",
            "description": "Each input at fault, located by a JSON Pointer",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}

# (request, status, title, detail, headers) -> an HTML page; set by the console.
ConsoleErrorPage = Callable[[Request, int, str, str, "dict[str, str] | None"], Awaitable[Response]]


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = dict(extensions or {})
    body |= {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _pointer(field: str) -> str:
    """A domain error's field as a JSON pointer into the request: bare names are body
    fields (``email`` -> ``#/body/email``), like the pointers of schema errors."""
    if field.startswith("#/"):
        return field
    return "#/body/" + field.replace(".", "/")


def _field_errors(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"pointer": _pointer(e.field), "detail": e.message} for e in errors]


def _location_pointer(loc: tuple[Any, ...]) -> str:
    return "#/" + "/".join(str(part) for part in loc)


def _validation_message(error: dict[str, Any]) -> str:
    # Pydantic messages may quote the input; keep the message, never the value.
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "this field is required"
    if kind == "json_invalid":
        return "the body is not valid JSON"
    return str(error.get("msg", "invalid value"))


def console_error_page(request: Request) -> ConsoleErrorPage | None:
    """The console's error page renderer when this request should get HTML: a console
    path (not under /api/) whose client accepts HTML; None for the API and JSON clients."""
    renderer: ConsoleErrorPage | None = getattr(request.app.state, "console_error_page", None)
    if renderer is None or request.url.path.startswith(API_PATH_PREFIX):
        return None
    accept = request.headers.get("accept", "")
    if accept and "text/html" not in accept and "*/*" not in accept:
        return None
    return renderer


async def _respond(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, str] | None = None,
) -> Response:
    page = console_error_page(request)
    if page is not None:
        return await page(request, status, title, detail, headers)
    return problem_response(
        status,
        code,
        title,
        detail,
        errors=errors,
        instance=request.url.path,
        headers=headers,
        extensions=extensions,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(CarepostError)
    async def _domain_error(request: Request, exc: CarepostError) -> Response:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        return await _respond(
            request,
            exc.status,
            exc.code,
            exc.title,
            exc.detail,
            errors=_field_errors(exc.errors),
            headers=headers,
            extensions=exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"pointer": _location_pointer(tuple(e["loc"])), "detail": _validation_message(e)}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"pointer": "#/", "detail": "invalid request"}
        return await _respond(
            request,
            422,
            "validation-failed",
            "Validation failed",
            f"{first['pointer']}: {first['detail']}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {
            404: ("not-found", "Not found"),
            405: ("method-not-allowed", "Method not allowed"),
        }
        code, title = titles.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return await _respond(
            request,
            exc.status_code,
            code,
            title,
            detail,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        from carepost.api.middleware import route_template  # the middleware imports us

        request_id = getattr(request.state, "request_id", "")
        # Exception messages may quote data (PHI); log the type and the frames only,
        # and the route template rather than the concrete path.
        log.error(
            "unhandled_error",
            route=route_template(request.scope),
            request_id=request_id,
            exception=describe_exception(exc),
        )
        return await _respond(
            request,
            500,
            "internal-error",
            "Internal error",
            f"something went wrong on our side; quote request id {request_id} to support",
            # This answer comes from the outermost (server error) middleware, outside
            # the request guard that adds these headers to every other response.
            headers={
                "X-Request-Id": request_id,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
