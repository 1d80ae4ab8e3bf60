"""The console's front page: who you are, your organization at a glance, what needs care.

Each figure is a single tenant-scoped COUNT, shown only to roles allowed to see what
it counts (a figure can reveal as much as the list behind it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from carepost.accounts.models import ApiKey, User, UserSession, WebAuthnCredential
from carepost.accounts.principal import Principal
from carepost.audit.models import AuditEvent
from carepost.audit.service import chain_for
from carepost.core.database import utcnow
from carepost.tenancy.models import Tenant
from carepost.web.console import Console, page

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Figure:
    label: str
    value: int
    href: str | None = None
    note: str = ""


def _count(session: Session, model: type, *conditions: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0


def figures(session: Session, principal: Principal) -> list[Figure]:
    tenant_id = principal.tenant_id
    now = utcnow()
    day_ago = now - timedelta(hours=24)
    shown: list[Figure] = []
    if principal.can("users:read"):
        active = _count(session, User, User.tenant_id == tenant_id, User.status == "active")
        shown.append(Figure("Active users", active, "/users"))
    if principal.can("apikeys:read"):
        keys = _count(
            session,
            ApiKey,
            ApiKey.tenant_id == tenant_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
        shown.append(Figure("Active API keys", keys, "/api-keys"))
    if principal.can("audit:read"):
        in_chain = (AuditEvent.chain == chain_for(tenant_id), AuditEvent.tenant_id == tenant_id)
        events = _count(session, AuditEvent, *in_chain, AuditEvent.occurred_at >= day_ago)
        failures = _count(
            session,
            AuditEvent,
            *in_chain,
            AuditEvent.occurred_at >= day_ago,
            AuditEvent.action.in_(("auth.sign_in", "auth.mfa")),
            AuditEvent.outcome != "success",
        )
        shown.append(Figure("Audit events, last 24 hours", events, "/audit"))
        shown.append(
            Figure(
                "Failed sign-in attempts, last 24 hours",
                failures,
                "/audit?action=auth.&outcome=failure",
            )
        )
    if principal.user_id is not None:
        mine = _count(
            session,
            UserSession,
            UserSession.tenant_id == tenant_id,
            UserSession.user_id == principal.user_id,
            UserSession.revoked_at.is_(None),
            UserSession.expires_at > now,
        )
        shown.append(Figure("Your active sessions", mine, "/account#sessions"))
    return shown


def attention(session: Session, principal: Principal) -> list[tuple[str, str]]:
    """Things an administrator should fix: (message, link)."""
    items: list[tuple[str, str]] = []
    tenant_id = principal.tenant_id
    if principal.can("users:read"):
        without_mfa = _count(
            session,
            User,
            User.tenant_id == tenant_id,
            User.status == "active",
            User.totp_enabled.is_(False),
            ~select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == User.id).exists(),
        )
        if without_mfa:
            noun = "user signs" if without_mfa == 1 else "users sign"
            items.append((f"{without_mfa} {noun} in without a second factor.", "/users"))
    if principal.can("tenant:write"):
        address = session.scalar(select(Tenant.physical_address).where(Tenant.id == tenant_id))
        if not (address or "").strip():
            items.append(
                (
                    "Add your organization's postal address: marketing email must carry it.",
                    "/settings",
                )
            )
    return items


@router.get("/")
def dashboard(console: Annotated[Console, Depends(page())]) -> Response:
    with console.session() as session:
        shown = figures(session, console.principal)
        todo = attention(session, console.principal)
    return console.render("dashboard.html", figures=shown, attention=todo, title="Dashboard")
