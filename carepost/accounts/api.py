"""REST routes for the principal, users and API keys (thin: validation + service calls)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.accounts import apikeys, service, webauthn
from carepost.accounts.models import User
from carepost.accounts.principal import Principal
from carepost.accounts.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    Me,
    SignedOut,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)
from carepost.accounts.sessions import revoke_user_sessions
from carepost.api.deps import current_principal, get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.audit import service as audit
from carepost.core.errors import PermissionDenied
from carepost.core.runtime import Runtime

router = APIRouter(tags=["users and access"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@router.get("/me", summary="Who am I: the organization, role and permissions of this credential")
def me(principal: Annotated[Principal, Depends(current_principal)]) -> Me:
    return Me(
        tenant_id=principal.tenant_id,
        organization=principal.tenant_slug,
        actor_type=principal.actor.type,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        role=principal.role,
        permissions=sorted(principal.permissions),
    )


@router.get("/users", summary="List users")
def list_users(
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("users:read"))],
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[UserOut]:
    after = decode_cursor(cursor)
    with runtime.bound_session(principal.keys) as session:
        query = select(User).where(User.tenant_id == principal.tenant_id).order_by(User.id)
        if after is not None:
            query = query.where(User.id > after)
        users = list(session.scalars(query.limit(limit + 1)))
        more = len(users) > limit
        users = users[:limit]
        with_passkeys = webauthn.users_with_passkeys(
            session, tenant_id=principal.tenant_id, user_ids=[u.id for u in users]
        )
    return Page[UserOut](
        items=[UserOut.of(u, has_passkey=u.id in with_passkeys) for u in users],
        next_cursor=encode_cursor(users[-1].id) if more else None,
    )


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Invite a user")
def create_user(
    body: UserCreate,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> UserCreated:
    with runtime.bound_session(principal.keys) as session:
        user, one_time = service.create_user(
            session,
            tenant_id=principal.tenant_id,
            email=body.email,
            role=body.role,
            name=body.name,
            actor=principal.actor,
            actor_role=_granting_role(principal),
        )
        return UserCreated(user=UserOut.of(user), one_time_password=one_time or "")


def _user_out(session: Session, user: User) -> UserOut:
    passkey = webauthn.has_passkey(session, tenant_id=user.tenant_id, user_id=user.id)
    return UserOut.of(user, has_passkey=passkey)


def _granting_role(principal: Principal) -> str:
    """API keys grant as admins at most (they can never create owners)."""
    return principal.role or "admin"


@router.get("/users/{user_id}", summary="Get a user")
def get_user(
    user_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("users:read"))],
) -> UserOut:
    with runtime.bound_session(principal.keys) as session:
        return _user_out(session, service.get_user(session, principal.tenant_id, user_id))


@router.patch("/users/{user_id}", summary="Change a user's role, name or status")
def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> UserOut:
    if principal.user_id == user_id and (body.role is not None or body.status is not None):
        raise PermissionDenied("you cannot change your own role or status", field="role")
    with runtime.bound_session(principal.keys) as session:
        user = service.update_user(
            session,
            tenant_id=principal.tenant_id,
            user_id=user_id,
            actor=principal.actor,
            actor_role=_granting_role(principal),
            role=body.role,
            name=body.name,
            status=body.status,
        )
        return _user_out(session, user)


@router.post("/users/{user_id}/reset-mfa", summary="Clear a user's second factor (lost device)")
def reset_mfa(
    user_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> UserOut:
    with runtime.bound_session(principal.keys) as session:
        user = service.reset_mfa(
            session,
            tenant_id=principal.tenant_id,
            user_id=user_id,
            actor=principal.actor,
            actor_role=_granting_role(principal),
        )
        return _user_out(session, user)


@router.post("/users/{user_id}/sign-out-everywhere", summary="End all of a user's sessions")
def sign_out_everywhere(
    user_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(current_principal)],
) -> SignedOut:
    if principal.user_id != user_id:
        principal.require("users:write")
    with runtime.bound_session(principal.keys) as session:
        user = service.get_user(session, principal.tenant_id, user_id)
        count = revoke_user_sessions(session, tenant_id=principal.tenant_id, user_id=user.id)
        audit.record(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="auth.sign_out_everywhere",
            object_type="user",
            object_id=user.id,
            details={"sessions": count},
        )
        return SignedOut(sessions_revoked=count)


@router.get("/api-keys", summary="List API keys (never their secrets)")
def list_api_keys(
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("apikeys:read"))],
) -> list[ApiKeyOut]:
    with runtime.bound_session(principal.keys) as session:
        return [ApiKeyOut.of(k) for k in apikeys.list_api_keys(session, principal.tenant_id)]


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, summary="Create a scoped API key")
def create_api_key(
    body: ApiKeyCreate,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("apikeys:write"))],
) -> ApiKeyCreated:
    with runtime.bound_session(principal.keys) as session:
        key, secret = apikeys.create_api_key(
            session,
            tenant_id=principal.tenant_id,
            name=body.name,
            scopes=body.scopes,
            creator_permissions=principal.permissions,
            actor=principal.actor,
            created_by=principal.user_id,
            expires_at=body.expires_at,
        )
        return ApiKeyCreated(api_key=ApiKeyOut.of(key), secret=secret)


@router.get("/api-keys/{key_id}", summary="Get an API key")
def get_api_key(
    key_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("apikeys:read"))],
) -> ApiKeyOut:
    with runtime.bound_session(principal.keys) as session:
        return ApiKeyOut.of(apikeys.get_api_key(session, principal.tenant_id, key_id))


@router.delete("/api-keys/{key_id}", summary="Revoke an API key")
def revoke_api_key(
    key_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(require("apikeys:write"))],
) -> ApiKeyOut:
    with runtime.bound_session(principal.keys) as session:
        key = apikeys.revoke_api_key(
            session, tenant_id=principal.tenant_id, key_id=key_id, actor=principal.actor
        )
        return ApiKeyOut.of(key)
