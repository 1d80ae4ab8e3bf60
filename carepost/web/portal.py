"""The portal in the console: messages held for pickup with their access events
(opened, codes, downloads, replies), recall, and reading replies.

Pages show ids, states, times and event codes, never content. Replies are PHI:
a ``phi:read`` user presses "Read replies" (a CSRF-checked POST), audited
``portal.reply_view_phi`` per reply in the same transaction as the read. A
message's portal page is keyed by the outbox message id (the link in the "reply
waiting" email).
"""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import ValidationError

from carepost.api.pagination import decode_cursor, encode_cursor
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError, FieldError, NotFound, ValidationFailed
from carepost.messages import service as messages
from carepost.portal import reply_files, sender, service
from carepost.portal.schemas import PortalSettingsIn, PortalSettingsOut
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)
READ = "reports:read"
SEND = "messages:send"
PHI_READ = "phi:read"
PAGE_SIZE = 50
EVENT_LABELS = {
    "deposited": "Held in the portal, notice queued",
    "code_sent": "Code emailed",
    "code_failed": "Wrong code",
    "password_failed": "Wrong password",
    "locked": "Locked after wrong attempts",
    "opened": "Opened",
    "downloaded": "Attachment downloaded",
    "replied": "Replied",
    "password_set": "Recipient set a password",
    "question_set": "Question set",
    "answer_failed": "Wrong answer",
    "client_throttled": "Refused: too many attempts from one address",
    "recalled": "Recalled",
    "expired": "Expired, content deleted",
}


@router.get("/portal")
def portal_list(console: Annotated[Console, Depends(page(READ))]) -> Response:
    cursor = console.request.query_params.get("cursor")
    try:
        after = decode_cursor(cursor)
    except Exception:  # noqa: BLE001 - a bad cursor is the first page
        after = None
    with console.session() as session:
        items = sender.list_items(
            session, console.principal.tenant_id, after=after, limit=PAGE_SIZE + 1
        )
        more = len(items) > PAGE_SIZE
        items = items[:PAGE_SIZE]
        counts = sender.reply_counts(session, [i.id for i in items])
        rows = [
            sender.item_out(session, i, detail=False, replies=counts.get(i.id, 0)) for i in items
        ]
    return console.render(
        "portal/console_list.html",
        title="Secure portal",
        items=rows,
        next_cursor=encode_cursor(items[-1].id) if more and items else None,
    )


def _detail(console: Console, message_id: uuid.UUID, *, reveal: bool) -> dict[str, Any]:
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        messages.get_message(session, tenant_id, message_id)  # 404 for another organization's
        item = sender.item_of_message(session, tenant_id, message_id)
        facts = (
            sender.item_out(session, item, detail=True, names=False) if item is not None else None
        )
        replies: list[dict[str, Any]] = []
        if item is not None and reveal:
            now = utcnow()
            for row in sender.replies_of(session, item.id):
                read = sender.read_reply(
                    session, tenant_id, item.id, row.id, actor=console.principal.actor, now=now
                )
                replies.append(
                    {
                        "id": read.id,
                        "at": read.created_at,
                        "body": read.body,
                        "files": read.attachment_meta or [],
                    }
                )
    return {
        "title": "Secure portal message",
        "message_id": message_id,
        "item": facts,
        "labels": EVENT_LABELS,
        "revealed": reveal,
        "replies": replies,
    }


@router.get("/portal/messages/{message_id}")
def portal_message(message_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    return console.render(
        "portal/console_detail.html", **_detail(console, parse_id(message_id), reveal=False)
    )


@router.post("/portal/messages/{message_id}/reveal")
def portal_replies(
    message_id: str, console: Annotated[Console, Depends(page(PHI_READ))]
) -> Response:
    console.principal.require(READ)
    return console.render(
        "portal/console_detail.html", **_detail(console, parse_id(message_id), reveal=True)
    )


@router.post("/portal/messages/{message_id}/replies/{reply_id}/attachments/{index}")
def portal_reply_attachment(
    message_id: str,
    reply_id: str,
    index: int,
    console: Annotated[Console, Depends(page(PHI_READ))],
) -> Response:
    """A file a recipient sent with a reply (PHI): a CSRF-checked POST (the console's
    session check), audited ``portal.reply_attachment_download``."""
    console.principal.require(READ)
    parsed, reply = parse_id(message_id), parse_id(reply_id)
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        messages.get_message(session, tenant_id, parsed)
        item = sender.item_of_message(session, tenant_id, parsed)
        found = (
            service.reply_attachment(
                session, tenant_id, item.id, reply, index,
                actor=console.principal.actor, now=utcnow(),
            )
            if item is not None
            else None
        )  # fmt: skip
        if found is None:
            raise NotFound("no such file")
        data = base64.b64decode(found["content"])
        disposition = reply_files.content_disposition(found["filename"])
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
    )


@router.post("/portal/messages/{message_id}/recall")
def portal_recall(message_id: str, console: Annotated[Console, Depends(page(SEND))]) -> Response:
    parsed = parse_id(message_id)
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        messages.get_message(session, tenant_id, parsed)
        item = sender.item_of_message(session, tenant_id, parsed)
        if item is None:
            return redirect(console.request, f"/portal/messages/{parsed}")
        sender.recall_item(session, tenant_id, item.id, actor=console.principal.actor, now=utcnow())
    return redirect(console.request, f"/portal/messages/{parsed}")


SETTINGS_FORM = FormSpec(
    id="portal-settings",
    submit="Save portal settings",
    fields=(
        Field(
            "notice_subject",
            "Notice subject",
            hint='Empty for "You have a secure message from <organization>". '
            "Never put health information here: the notice travels as ordinary email.",
            attrs={"maxlength": "200"},
        ),
        Field(
            "expiry_days",
            "Keep messages for (days)",
            "number",
            hint="Between 1 and 365. After this the content is deleted.",
            required=True,
            attrs={"min": "1", "max": "365", "inputmode": "numeric"},
        ),
        Field(
            "logo_url",
            "Logo",
            hint="A path on this site (/static/...) or a data:image URL; other sites' images "
            "are blocked by the pages' security policy.",
            attrs={"maxlength": "500"},
        ),
        Field(
            "brand_color",
            "Colour",
            hint="Six hex digits, such as #0b5394. Choose one with enough contrast on white.",
            required=True,
            attrs={"maxlength": "7", "pattern": "#[0-9a-fA-F]{6}"},
        ),
        Field(
            "reply_delivery",
            "Replies",
            "select",
            hint="Delivered replies go to the original sender's address under the protection "
            "policy: S/MIME or OpenPGP when the sender has a key in the key directory, "
            "verified TLS where the domain guarantees it, otherwise the policy's fallback "
            "(the portal). Never in clear.",
            choices=(
                Choice("notice", "Email the sender a notice; read replies here"),
                Choice("deliver", "Deliver the reply to the sender, protected by policy"),
            ),
        ),
    ),
)
SETTINGS_NOTICES = {"saved": "Portal settings saved."}


def _settings_bound(found: PortalSettingsOut) -> BoundForm:
    return SETTINGS_FORM.bind(
        notice_subject=found.notice_subject,
        expiry_days=str(found.expiry_days),
        logo_url=found.logo_url,
        brand_color=found.brand_color,
        reply_delivery=found.reply_delivery,
    )


def _settings_page(console: Console, form: BoundForm, *, status: int = 200) -> Response:
    with console.session() as session:
        found = service.settings_out(session, console.principal.tenant_id)
    return console.render(
        "portal/console_settings.html",
        status=status,
        form=form,
        effective_subject=found.effective_notice_subject,
        editable=console.can("tenant:write"),
        notice=notice_for(console.request, SETTINGS_NOTICES),
        title="Secure portal settings",
    )


@router.get("/portal/settings")
def portal_settings(console: Annotated[Console, Depends(page("tenant:read"))]) -> Response:
    with console.session() as session:
        found = service.settings_out(session, console.principal.tenant_id)
    return _settings_page(console, _settings_bound(found))


@router.post("/portal/settings")
def save_portal_settings(
    console: Annotated[Console, Depends(page("tenant:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = SETTINGS_FORM.bind(data)
    try:
        form.validate()
        days = form.value("expiry_days").strip()
        if not days.isdigit() or len(days) > 4:
            raise ValidationFailed("enter a whole number", field="expiry_days")
        try:
            body = PortalSettingsIn(
                notice_subject=form.value("notice_subject"),
                expiry_days=int(days),
                logo_url=form.value("logo_url").strip(),
                brand_color=form.value("brand_color").strip(),
                reply_delivery=form.value("reply_delivery").strip() or "notice",
            )
        except ValidationError as exc:
            raise ValidationFailed(
                "check the highlighted fields",
                errors=[
                    FieldError(str(e["loc"][-1]) if e["loc"] else "expiry_days", e["msg"].lower())
                    for e in exc.errors()
                ],
            ) from None
        with console.session() as session:
            service.save_settings(
                session, console.principal.tenant_id, body, actor=console.principal.actor
            )
    except CarepostError as exc:
        form.failed(exc)
        return _settings_page(console, form, status=exc.status)
    return redirect(console.request, "/portal/settings?done=saved")
