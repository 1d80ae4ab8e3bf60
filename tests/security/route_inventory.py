"""Every route the application serves, found by walking the app, classified by kind.

Security suites (tenant isolation, the role matrix) compare their tables with this
inventory and fail when a route appears that they do not cover, so a new route
cannot escape them by being forgotten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from carepost.api.app import API_PREFIX

# Routes that serve no tenant data at all.
PUBLIC_ROUTES = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        f"{API_PREFIX}/openapi.json",
        f"{API_PREFIX}/docs",
        "/docs/oauth2-redirect",
        "/static",  # carepost's own assets (a mount)
        # Tracking pixel and click redirect: a constant GIF, or a 302 to the URL sealed
        # in a token carepost minted (tampered -> 404); no tenant data either way
        # (tests/tracking/test_tracking_routes.py).
        "/t/o/{token}",
        "/t/c/{token}",
    }
)
PARAMETER = re.compile(r"{(\w+)(?::[^}]*)?}")


@dataclass(frozen=True, order=True)
class RouteKey:
    method: str
    path: str

    @property
    def kind(self) -> str:
        """``api`` (under /api/v1), ``public`` (no tenant data) or ``page`` (the console)."""
        if self.path in PUBLIC_ROUTES:
            return "public"
        if self.path.startswith(API_PREFIX + "/"):
            return "api"
        return "page"

    @property
    def parameters(self) -> list[str]:
        return PARAMETER.findall(self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _flat_routes(app: FastAPI) -> list[Any]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI releases that flatten included routers themselves
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def app_routes(app: FastAPI) -> list[RouteKey]:
    """Every (method, path) the app answers; HEAD is implied by GET, a mount is ``*``."""
    keys: set[RouteKey] = set()
    for route in _flat_routes(app):
        path = getattr(route, "path", None)
        if not path:
            raise AssertionError(f"a route without a path: {route!r}")
        methods = getattr(route, "methods", None) or {"*"}
        keys.update(RouteKey(method, path) for method in methods if method != "HEAD")
    return sorted(keys)


def openapi_operations(app: FastAPI) -> set[RouteKey]:
    document = app.openapi()
    return {
        RouteKey(method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "patch", "delete"}
    }
