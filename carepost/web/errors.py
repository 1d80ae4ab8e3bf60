"""Console error pages: 403, 404, 429, 500 … as HTML, for people, not problem+json.

:func:`carepost.api.problems.install_problem_handlers` hands errors on console paths
to :func:`render_error_page`; the API under ``/api/v1`` keeps RFC 9457 problem details.
A 401 becomes a trip to the sign-in page. An HTMX request gets a short alert swapped
into the page's message area instead of a whole page inside a table cell.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from carepost.api.deps import SESSION_COOKIE
from carepost.core.errors import CarepostError
from carepost.web.console import (
    LOGIN,
    LOGIN_EXPIRED,
    ConsoleRedirect,
    authenticated,
    is_htmx,
    redirect,
    render,
)

# What a person can do about each status, in plain words.
EXPLANATIONS: dict[int, tuple[str, str]] = {
    400: ("The request was not understood", "Go back, check what you entered and try again."),
    403: (
        "You don't have access to this",
        "Your role does not include this page or action. Ask an owner or administrator "
        "of your organization if you need it.",
    ),
    404: (
        "Page not found",
        "The page or object you asked for does not exist, or it is not part of your organization.",
    ),
    405: ("That action is not available here", "Go back and use the buttons on the page."),
    409: ("That conflicts with the current state", "Reload the page and try again."),
    413: ("That was too large", "Send a smaller file or less text."),
    422: ("Some of what you sent is not valid", "Go back, check the form and try again."),
    429: ("Too many attempts", "Wait a little and try again."),
    500: (
        "Something went wrong on our side",
        "The error has been logged. Try again; if it keeps happening, quote the request "
        "id below to your administrator.",
    ),
}


async def render_error_page(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    if status == 401:
        had_session = SESSION_COOKIE in request.cookies
        return redirect(request, LOGIN_EXPIRED if had_session else LOGIN, clear_session=had_session)
    console = getattr(request.state, "console", None)
    if console is None and request.method == "GET" and SESSION_COOKIE in request.cookies:
        # An unknown page was asked for before any view authenticated: show the error
        # inside the console's frame when the person is signed in.
        try:
            console = await authenticated(request)
        except (ConsoleRedirect, CarepostError):
            console = None
    heading, advice = EXPLANATIONS.get(status, (title, ""))
    # A 404's or 500's own detail says nothing a person can use ("Not Found"); domain
    # errors (403 "this needs the 'users:write' permission") do.
    show_detail = status in (403, 409, 422, 429) and detail and detail != title
    context = {
        "status_code": status,
        "heading": heading,
        "advice": advice,
        "detail": detail if show_detail else "",
        "request_id": getattr(request.state, "request_id", ""),
        "console": console,
    }
    if is_htmx(request):
        extra = {"HX-Retarget": "#messages", "HX-Reswap": "innerHTML"}
        return render(
            request,
            "htmx/alert.html",
            status=status,
            headers={**(headers or {}), **extra},
            **context,
        )
    return render(request, "error.html", status=status, headers=headers, **context)
