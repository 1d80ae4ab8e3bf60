"""REST routes of the portal (``/portal/messages``): the sender's list, one item with
its access events and replies' metadata, and recall. Reading needs ``reports:read``,
recall ``messages:send``; the organization's portal settings (notice subject,
expiry, branding) need ``tenant:read`` / ``tenant:write``. No PHI travels here
(reply texts and files are read in the console, with ``phi:read``, audited; the
files' names show here only with ``phi:read``, audited ``portal.view_phi``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.portal import sender, service
from carepost.portal.schemas import (
    PortalItemOut,
    PortalQuestionIn,
    PortalSettingsIn,
    PortalSettingsOut,
)

router = APIRouter(prefix="/portal", tags=["portal"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("reports:read"))]
Sender = Annotated[Principal, Depends(require("messages:send"))]
SettingsReader = Annotated[Principal, Depends(require("tenant:read"))]
SettingsWriter = Annotated[Principal, Depends(require("tenant:write"))]


@router.get("/messages", summary="List messages held in the secure portal, newest first")
def list_portal_messages(
    runtime: RuntimeDep,
    principal: Reader,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[PortalItemOut]:
    after = decode_cursor(cursor)
    with runtime.bound_session(principal.keys) as session:
        items = sender.list_items(session, principal.tenant_id, after=after, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        counts = sender.reply_counts(session, [i.id for i in items])
        out = [
            sender.item_out(session, i, detail=False, replies=counts.get(i.id, 0)) for i in items
        ]
    return Page(items=out, next_cursor=encode_cursor(items[-1].id) if more and items else None)


@router.get(
    "/messages/{portal_item_id}", summary="A portal message with its access events and replies"
)
def get_portal_message(
    portal_item_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> PortalItemOut:
    with runtime.bound_session(principal.keys) as session:
        item = sender.get_item(session, principal.tenant_id, portal_item_id)
        names = principal.can("phi:read")
        out = sender.item_out(session, item, detail=True, names=names)
        shown = sum(len(r.attachments) for r in out.reply_list or [])
        if names and shown:
            audit.record(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                action="portal.view_phi",
                object_type="portal_item",
                object_id=str(item.id),
                details={"reply_file_names": shown},
            )
        return out


@router.post(
    "/messages/{portal_item_id}/recall", summary="Recall a portal message: its content is deleted"
)
def recall_portal_message(
    portal_item_id: uuid.UUID, runtime: RuntimeDep, principal: Sender
) -> PortalItemOut:
    with runtime.bound_session(principal.keys) as session:
        item = sender.recall_item(
            session, principal.tenant_id, portal_item_id, actor=principal.actor, now=utcnow()
        )
        session.flush()
        return sender.item_out(session, item, detail=True)


@router.get(
    "/settings", summary="The organization's portal settings (notice subject, expiry, branding)"
)
def get_portal_settings(runtime: RuntimeDep, principal: SettingsReader) -> PortalSettingsOut:
    with runtime.bound_session(principal.keys) as session:
        return service.settings_out(session, principal.tenant_id)


@router.put("/settings", summary="Change the organization's portal settings (audited)")
def put_portal_settings(
    body: PortalSettingsIn, runtime: RuntimeDep, principal: SettingsWriter
) -> PortalSettingsOut:
    with runtime.bound_session(principal.keys) as session:
        service.save_settings(session, principal.tenant_id, body, actor=principal.actor)
        session.flush()
        return service.settings_out(session, principal.tenant_id)


@router.post(
    "/messages/{portal_item_id}/question",
    summary="Set a question the recipient may answer instead of an emailed code",
)
def set_portal_question(
    portal_item_id: uuid.UUID, body: PortalQuestionIn, runtime: RuntimeDep, principal: Sender
) -> PortalItemOut:
    with runtime.bound_session(principal.keys) as session:
        item = sender.set_question(
            session,
            principal.tenant_id,
            portal_item_id,
            body.question,
            body.answer,
            actor=principal.actor,
            now=utcnow(),
        )
        session.flush()
        return sender.item_out(session, item, detail=True)
