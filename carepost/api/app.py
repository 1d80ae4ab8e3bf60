"""The FastAPI application: the REST API under /api/v1, the console, health and metrics."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

import carepost
from carepost.accounts.api import router as accounts_router
from carepost.api.middleware import RequestGuard
from carepost.api.problems import PROBLEM_JSON, PROBLEM_SCHEMA, install_problem_handlers
from carepost.audit.api import router as audit_router
from carepost.consent.api import router as consent_router
from carepost.consent.pages import router as recipient_router
from carepost.contacts.api import router as contacts_router
from carepost.contacts.events_api import router as events_router
from carepost.contacts.fields_api import router as contact_fields_router
from carepost.contacts.lists_api import router as lists_router
from carepost.contacts.stages_api import router as journey_stages_router
from carepost.core.config import get_settings
from carepost.core.logging import configure_logging
from carepost.core.migrations import current_revision
from carepost.core.runtime import Runtime, build_runtime
from carepost.dlp.api import router as dlp_router
from carepost.domains.api import router as domains_router
from carepost.e2ee.api import router as e2ee_keys_router
from carepost.gateway.api import router as gateway_router
from carepost.imports.api import router as imports_router
from carepost.messages.api import router as messages_router
from carepost.messages.campaigns_api import router as campaigns_router
from carepost.policy.api import router as policy_router
from carepost.portal.api import router as portal_router
from carepost.segments.api import router as segments_router
from carepost.templates.api import router as templates_router
from carepost.tenancy.api import router as tenancy_router
from carepost.tracking.api import router as tracking_router
from carepost.tracking.pages import router as tracking_pages_router
from carepost.web.pages import install_console
from carepost.web.portal_pages import router as portal_pages_router
from carepost.webhooks.api import router as webhooks_router
from carepost.workflows.api import router as workflows_router

API_PREFIX = "/api/v1"
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
    }
    for status, description in {
        400: "The body could not be parsed",
        401: "Authentication required",
        403: "Forbidden",
        404: "Not found",
        409: "Conflicts with the current state (a duplicate, the last owner)",
        413: "Request too large",
        422: "Validation failed",
        429: "Too many requests",
    }.items()
}


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    router.include_router(accounts_router)
    router.include_router(tenancy_router)
    router.include_router(audit_router)
    router.include_router(contacts_router)
    router.include_router(contact_fields_router)
    router.include_router(lists_router)
    router.include_router(journey_stages_router)
    router.include_router(events_router)
    router.include_router(consent_router)
    router.include_router(imports_router)
    router.include_router(segments_router)
    router.include_router(templates_router)
    router.include_router(webhooks_router)
    router.include_router(tracking_router)
    router.include_router(domains_router)
    router.include_router(messages_router)
    router.include_router(campaigns_router)
    router.include_router(policy_router)
    router.include_router(dlp_router)
    router.include_router(e2ee_keys_router)
    router.include_router(workflows_router)
    router.include_router(gateway_router)
    router.include_router(portal_router)
    return router


def _install_operations_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": carepost.__version__}

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        try:
            with runtime.database.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            revision = current_revision(runtime.database.engine)
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure as not ready
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
        if revision is None:
            return JSONResponse({"status": "unavailable", "reason": "not migrated"}, 503)
        return JSONResponse({"status": "ready", "revision": revision})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(runtime: Runtime | None = None) -> FastAPI:
    if runtime is None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format, settings.log_file)
        runtime = build_runtime(settings)
    app = FastAPI(
        title="carepost API",
        version=carepost.__version__,
        description=(
            "Secure healthcare communications. Authenticate with a scoped API key: "
            "`Authorization: Bearer cp_...`. Errors are RFC 9457 problem details."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    app.include_router(api_router())
    _install_operations_routes(app)
    # Recipients' signed-link pages (unsubscribe, preference center): no sign-in.
    app.include_router(recipient_router)
    # Open pixel and click redirects (/t/o, /t/c): public, signed tokens, no tenant data.
    app.include_router(tracking_pages_router)
    # The secure portal's recipient pages (/s/{token}): no sign-in, a one-time code.
    app.include_router(portal_pages_router)
    install_console(app)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=runtime.settings.max_request_bytes,
        hsts=runtime.settings.base_url.startswith("https://"),
        upload_limits={
            f"{API_PREFIX}/imports": runtime.settings.max_import_bytes,
            f"{API_PREFIX}/messages/batch": runtime.settings.outbox_max_batch_bytes,
            # The console's upload is multipart: room for its envelope; the route
            # itself refuses a file over the limit with a page that says so.
            "/imports/upload": runtime.settings.max_import_bytes + 1024 * 1024,
        },
    )
    return app
