"""Who is acting in a request: a console user or an API key, with their permissions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from carepost.audit.service import Actor
from carepost.core.errors import PermissionDenied
from carepost.crypto.keyring import TenantKeys


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    tenant_slug: str
    actor: Actor
    permissions: frozenset[str]
    keys: TenantKeys
    user_id: uuid.UUID | None = None
    role: str | None = None
    api_key_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    csrf_token: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(f"this needs the {permission!r} permission")
