"""The console: server-rendered pages (Jinja2 + HTMX), assets served by carepost itself.

:func:`install_console` mounts the static files (HTMX is vendored: no CDN), adds the
console's routers (kept out of the OpenAPI document, which describes the REST API
only), sends requests that must sign in to the sign-in page, and registers the HTML
error pages that :mod:`carepost.api.problems` uses for console paths.

Each section lives in its own module of thin views calling services:
:mod:`~carepost.web.signin`, :mod:`~carepost.web.credentials`,
:mod:`~carepost.web.passkeys`, :mod:`~carepost.web.dashboard`, :mod:`~carepost.web.users`,
:mod:`~carepost.web.apikeys`, :mod:`~carepost.web.organization`,
:mod:`~carepost.web.account`, :mod:`~carepost.web.audit`, the contacts pages
(:mod:`~carepost.web.contacts`, ``contacts_detail``, ``contacts_actions``,
``contacts_lists``, ``contacts_fields``, ``contacts_stages``), :mod:`~carepost.web.imports` and
:mod:`~carepost.web.campaigns`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from carepost.web import (
    account,
    apikeys,
    audit,
    campaigns,
    contacts,
    contacts_actions,
    contacts_detail,
    contacts_fields,
    contacts_lists,
    contacts_stages,
    credentials,
    dashboard,
    domains,
    imports,
    messages,
    organization,
    passkeys,
    portal,
    protection_policy,
    segments,
    signin,
    templates_pages,
    users,
    webhooks,
    workflow_triggers,
    workflows,
)
from carepost.web import gateway as gateway_pages
from carepost.web.console import ConsoleRedirect, redirect
from carepost.web.errors import render_error_page

STATIC_DIR = Path(__file__).parent / "static"
ROUTERS = (
    signin.router,
    credentials.router,
    passkeys.router,
    dashboard.router,
    users.router,
    apikeys.router,
    organization.router,
    account.router,
    audit.router,
    contacts.router,
    contacts_detail.router,
    contacts_actions.router,
    contacts_lists.router,
    contacts_fields.router,
    contacts_stages.router,
    segments.router,
    imports.router,
    templates_pages.router,
    campaigns.router,
    messages.router,
    webhooks.router,
    domains.router,
    workflows.router,
    workflow_triggers.router,
    portal.router,
    protection_policy.router,
    gateway_pages.router,
)


async def _console_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRedirect)
    return redirect(request, exc.location, clear_session=exc.clear_session)


def install_console(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(ConsoleRedirect, _console_redirect)
    app.state.console_error_page = render_error_page
