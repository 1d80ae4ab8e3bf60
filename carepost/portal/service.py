"""The portal's rules: notices through the outbox, one-time codes with throttling and
lockout, passwords, replies, recall and expiry; every access is an event and an
audit entry (ids and counts only, never content or addresses).

Notices (the pickup notice, codes, "a reply is waiting") are ordinary transactional
outbox rows created by ``portal``: they carry the organization's name, a link with
a random token and, for codes, the code. Never the message's subject or content.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, defer

from carepost.audit import service as audit
from carepost.contacts.fields import normalize_email
from carepost.core.database import new_id, utcnow
from carepost.core.errors import FieldError, ValidationFailed
from carepost.crypto.keyring import current_tenant_keys
from carepost.dlp.extraction import Attachment as DlpAttachment
from carepost.dlp.extraction import MessageContent, ScanLimits
from carepost.dlp.service import scan_for_tenant
from carepost.messages.events import write_events
from carepost.messages.models import PRIORITIES, Message, MessageState
from carepost.messages.sending import EMAIL_INDEX_LABEL
from carepost.portal import presets, reply_files
from carepost.portal.models import (
    EventKind,
    ItemState,
    PortalChallenge,
    PortalEvent,
    PortalItem,
    PortalReply,
    PortalSettings,
)
from carepost.portal.schemas import PortalSettingsIn, PortalSettingsOut
from carepost.tenancy.models import Tenant

normal_answer = presets.normal_answer

CODE_LIFETIME = timedelta(minutes=10)
CODES_PER_HOUR = 5
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(minutes=15)
MAX_REPLY = 20_000
MIN_PASSWORD = 10
DEFAULT_EXPIRY_DAYS = 30
REPLY_SCAN_LIMITS = ScanLimits(max_seconds=3.0, max_attachments=reply_files.MAX_FILES)
# Per client address, across the tenant's items: code requests and wrong codes, passwords
# and answers count; past the limit every such request answers 429 until the window moves.
CLIENT_WINDOW = timedelta(minutes=15)
CLIENT_MAX_ATTEMPTS = 20
CLIENT_ATTEMPT_KINDS = (
    EventKind.CODE_SENT,
    EventKind.CODE_FAILED,
    EventKind.PASSWORD_FAILED,
    EventKind.ANSWER_FAILED,
)
PORTAL_ACTOR = audit.Actor("system", "", "carepost portal")
CREATED_BY = "portal"
_hasher = PasswordHasher()


def recipient_actor(item: PortalItem, client_address: str = "") -> audit.Actor:
    return audit.Actor("recipient", str(item.id), "portal recipient", client_address)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Branding:
    organization: str
    logo_url: str
    brand_color: str
    notice_subject: str
    expiry_days: int
    reply_delivery: str = "notice"


def branding(session: Session, tenant_id: uuid.UUID) -> Branding:
    tenant = session.get(Tenant, tenant_id)
    name = tenant.name if tenant is not None else "your care provider"
    row = session.get(PortalSettings, tenant_id)
    return Branding(
        organization=name,
        logo_url=row.logo_url if row else "",
        brand_color=row.brand_color if row else "#0b5394",
        notice_subject=(row.notice_subject if row and row.notice_subject else "")
        or f"You have a secure message from {name}",
        expiry_days=row.expiry_days if row else DEFAULT_EXPIRY_DAYS,
        reply_delivery=row.reply_delivery if row and row.reply_delivery else "notice",
    )


def record_event(
    session: Session,
    item: PortalItem,
    kind: str,
    *,
    now: datetime,
    actor: audit.Actor,
    detail: dict[str, Any] | None = None,
    outcome: str = "success",
) -> None:
    """The sender's view of the item (``portal_events``) and the audit trail, together.

    A recipient's event carries a keyed hash of the client address (the audit entry,
    as before, the address itself) so that the throttle can count it across items."""
    detail = detail or {}
    session.add(
        PortalEvent(
            tenant_id=item.tenant_id, item_id=item.id, kind=kind, occurred_at=now, detail=detail,
            client_hash=client_hash(actor.client_address) if actor.type == "recipient" else None,
        )
    )  # fmt: skip
    audit.record(
        session,
        tenant_id=item.tenant_id,
        actor=actor,
        action=f"portal.{kind}",
        object_type="portal_item",
        object_id=str(item.id),
        outcome=outcome,
        details={"message_id": str(item.message_id), **detail},
    )


def queue_notice(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    to_address: str,
    from_address: str,
    from_name: str | None,
    subject: str,
    text: str,
    idempotency_key: str,
    now: datetime,
    created_by_id: str,
    created_by_type: str = CREATED_BY,
    attachments: list[dict[str, Any]] | None = None,
    phi: bool = False,
) -> uuid.UUID:
    """One transactional outbox row. Notices (``created_by_type="portal"``) carry no
    PHI: the caller writes the text. A delivered reply (``phi``) does: it is marked so,
    and the protection stage decides how it travels like any PHI message."""
    keys = current_tenant_keys()
    address = normalize_email(to_address)
    found = session.scalar(
        select(Message.id).where(
            Message.tenant_id == tenant_id, Message.idempotency_key == idempotency_key
        )
    )
    if found is not None:
        return found
    paragraphs = "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n")
    )
    notice = Message(
        id=new_id(),
        tenant_id=tenant_id,
        to_address=address,
        to_index=keys.blind_index(EMAIL_INDEX_LABEL, address),
        from_address=from_address,
        from_name=from_name,
        subject=subject,
        body={"html": paragraphs, "text": text},
        purpose="transactional",
        priority=PRIORITIES["high"],
        attachments=attachments or None,
        uses_phi=phi,
        state=MessageState.QUEUED,
        next_attempt_at=now,
        first_queued_at=now,
        last_event_at=now,
        created_at=now,
        idempotency_key=idempotency_key,
        created_by_type=created_by_type,
        created_by_id=created_by_id,
        tags=["portal"],
    )
    session.add(notice)
    session.flush()
    write_events(session, tenant_id, [(notice.id, None, MessageState.QUEUED, {})], now=now)
    return notice.id


def find_item_tenant(session: Session, token: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(item id, tenant id) of a link's token, without decrypting anything."""
    if not token or len(token) > 200:
        return None
    row = session.execute(
        select(PortalItem.id, PortalItem.tenant_id).where(
            PortalItem.token_hash == token_hash(token)
        )
    ).first()
    return None if row is None else (row[0], row[1])


def is_gone(item: PortalItem, now: datetime) -> bool:
    return item.state != ItemState.ACTIVE or item.expires_at <= now or item.content is None


def is_locked(item: PortalItem, now: datetime) -> bool:
    return item.locked_until is not None and item.locked_until > now


def client_hash(client_address: str) -> str | None:
    """The tenant-keyed HMAC of a client address (none without an address)."""
    if not client_address:
        return None
    return current_tenant_keys().blind_index("portal.client", client_address)


def client_throttled(
    session: Session, item: PortalItem, *, now: datetime, client_address: str
) -> bool:
    """True (and a ``client_throttled`` event) when this address made too many attempts
    on any of the tenant's items within the window."""
    hashed = client_hash(client_address)
    if hashed is None:
        return False
    attempts = session.scalar(
        select(func.count())
        .select_from(PortalEvent)
        .where(
            PortalEvent.tenant_id == item.tenant_id,
            PortalEvent.client_hash == hashed,
            PortalEvent.kind.in_(CLIENT_ATTEMPT_KINDS),
            PortalEvent.occurred_at > now - CLIENT_WINDOW,
        )
    )
    if (attempts or 0) < CLIENT_MAX_ATTEMPTS:
        return False
    record_event(
        session, item, EventKind.THROTTLED, now=now,
        actor=recipient_actor(item, client_address), outcome="failure",
        detail={"window_minutes": int(CLIENT_WINDOW.total_seconds() // 60)},
    )  # fmt: skip
    return True


class ClientThrottled(Exception):
    """Too many attempts from one client address across items."""


class Throttled(Exception):
    """Too many codes asked for, or the item is locked after wrong attempts."""

    def __init__(self, until: datetime | None) -> None:
        super().__init__("throttled")
        self.until = until


def send_code(
    session: Session, item: PortalItem, *, now: datetime, client_address: str = ""
) -> uuid.UUID:
    """A fresh six-digit code by email (the notice address: the recipient's own)."""
    if client_throttled(session, item, now=now, client_address=client_address):
        raise ClientThrottled()
    if is_locked(item, now):
        raise Throttled(item.locked_until)
    recent = session.scalar(
        select(func.count())
        .select_from(PortalChallenge)
        .where(
            PortalChallenge.item_id == item.id,
            PortalChallenge.created_at > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= CODES_PER_HOUR:
        raise Throttled(None)
    keys = current_tenant_keys()
    code = f"{secrets.randbelow(10**6):06d}"
    challenge = PortalChallenge(
        id=new_id(),
        tenant_id=item.tenant_id,
        item_id=item.id,
        code_hash=keys.blind_index("portal.code", f"{item.id}:{code}"),
        expires_at=now + CODE_LIFETIME,
        created_at=now,
    )
    session.add(challenge)
    brand = branding(session, item.tenant_id)
    minutes = int(CODE_LIFETIME.total_seconds() // 60)
    queue_notice(
        session,
        tenant_id=item.tenant_id,
        to_address=item.to_address,
        from_address=item.from_address,
        from_name=brand.organization[:200],
        subject=f"Your {brand.organization} secure message code",
        text=(
            f"Your code is {code}\n\nEnter it on the secure message page. "
            f"It expires in {minutes} minutes and works once.\n\n"
            "If you did not ask for a code, you can ignore this email."
        ),
        idempotency_key=f"portal-code:{challenge.id}",
        now=now,
        created_by_id=str(item.id),
    )
    record_event(
        session,
        item,
        EventKind.CODE_SENT,
        now=now,
        actor=recipient_actor(item, client_address),
    )
    return challenge.id


def _fail(
    session: Session, item: PortalItem, kind: str, *, now: datetime, actor: audit.Actor
) -> str:
    item.failed_attempts += 1
    record_event(
        session, item, kind, now=now, actor=actor, outcome="failure",
        detail={"attempt": item.failed_attempts},
    )  # fmt: skip
    if item.failed_attempts >= MAX_FAILURES:
        item.locked_until = now + LOCKOUT
        item.failed_attempts = 0
        session.execute(
            update(PortalChallenge)
            .where(PortalChallenge.item_id == item.id, PortalChallenge.used_at.is_(None))
            .values(used_at=now)
        )
        record_event(
            session, item, EventKind.LOCKED, now=now, actor=actor,
            detail={"minutes": int(LOCKOUT.total_seconds() // 60)},
        )  # fmt: skip
        return "locked"
    return "wrong"


def _opened(
    session: Session, item: PortalItem, how: str, *, now: datetime, actor: audit.Actor
) -> None:
    item.failed_attempts = 0
    if item.first_opened_at is None:
        item.first_opened_at = now
    record_event(session, item, EventKind.OPENED, now=now, actor=actor, detail={"by": how})


def verify_code(
    session: Session, item: PortalItem, code: str, *, now: datetime, client_address: str = ""
) -> str:
    """ "ok", "wrong", "expired" (no live code: ask for another), "locked" or "throttled"."""
    actor = recipient_actor(item, client_address)
    if client_throttled(session, item, now=now, client_address=client_address):
        return "throttled"
    if is_locked(item, now):
        return "locked"
    challenge = session.scalar(
        select(PortalChallenge)
        .where(PortalChallenge.item_id == item.id, PortalChallenge.used_at.is_(None))
        .order_by(PortalChallenge.created_at.desc())
        .limit(1)
    )
    if challenge is None or challenge.expires_at <= now:
        return "expired"
    code = "".join(code.split())
    expected = current_tenant_keys().blind_index("portal.code", f"{item.id}:{code}")
    if not (
        code.isdigit() and len(code) == 6 and secrets.compare_digest(expected, challenge.code_hash)
    ):
        return _fail(session, item, EventKind.CODE_FAILED, now=now, actor=actor)
    challenge.used_at = now
    _opened(session, item, "code", now=now, actor=actor)
    return "ok"


def verify_password(
    session: Session, item: PortalItem, password: str, *, now: datetime, client_address: str = ""
) -> str:
    """ "ok", "wrong", "locked" or "throttled"; the same counter and lockout as codes."""
    actor = recipient_actor(item, client_address)
    if client_throttled(session, item, now=now, client_address=client_address):
        return "throttled"
    if is_locked(item, now):
        return "locked"
    if not item.password_hash:
        return "wrong"
    try:
        _hasher.verify(item.password_hash, password)
    except (VerificationError, InvalidHashError):
        return _fail(session, item, EventKind.PASSWORD_FAILED, now=now, actor=actor)
    _opened(session, item, "password", now=now, actor=actor)
    return "ok"


def set_password(
    session: Session, item: PortalItem, password: str, *, now: datetime, client_address: str = ""
) -> None:
    if len(password) < MIN_PASSWORD or len(password) > 200:
        raise ValidationFailed(f"use at least {MIN_PASSWORD} characters", field="#/body/password")
    item.password_hash = _hasher.hash(password)
    record_event(
        session, item, EventKind.PASSWORD_SET, now=now, actor=recipient_actor(item, client_address)
    )


def attachment(
    session: Session, item: PortalItem, index: int, *, now: datetime, client_address: str = ""
) -> dict[str, str] | None:
    attachments = (item.content or {}).get("attachments") or []
    if not 0 <= index < len(attachments):
        return None
    record_event(
        session, item, EventKind.DOWNLOADED, now=now,
        actor=recipient_actor(item, client_address), detail={"attachment": index},
    )  # fmt: skip
    found: dict[str, str] = attachments[index]
    return found


def reply(
    session: Session,
    item: PortalItem,
    text: str,
    *,
    now: datetime,
    base_url: str,
    client_address: str = "",
    files: Sequence[reply_files.Upload] = (),
) -> PortalReply:
    """Store the reply (and its files) sealed, scanned by DLP; then, by the portal
    settings, tell the sender (no PHI) that it waits in the console, or deliver it to
    the sender through the outbox under the protection policy."""
    text = text.strip()
    problems: list[FieldError] = []
    if not text:
        problems.append(FieldError("reply", "write a reply first"))
    elif len(text) > MAX_REPLY:
        problems.append(FieldError("reply", f"at most {MAX_REPLY} characters"))
    try:
        stored = reply_files.check(files)
    except ValidationFailed as exc:
        problems.extend(exc.errors)
        stored = []
    if problems:
        raise ValidationFailed(problems[0].message, errors=problems)
    row = PortalReply(
        id=new_id(), tenant_id=item.tenant_id, item_id=item.id, body=text, length=len(text),
        attachments=stored or None, attachment_meta=reply_files.meta(stored) or None,
        dlp=_scan_reply(session, text, stored), created_at=now,
    )  # fmt: skip
    session.add(row)
    brand = branding(session, item.tenant_id)
    record_event(
        session, item, EventKind.REPLIED, now=now,
        actor=recipient_actor(item, client_address),
        detail={"reply_id": str(row.id), "attachments": len(stored),
                "delivery": brand.reply_delivery},
    )  # fmt: skip
    if brand.reply_delivery == "deliver":
        row.delivery_id = _deliver_reply(
            session, item, row, stored, brand, now=now, base_url=base_url
        )
        return row
    queue_notice(
        session,
        tenant_id=item.tenant_id,
        to_address=item.from_address,
        from_address=item.from_address,
        from_name="carepost secure portal",
        subject="A secure reply is waiting",
        text=(
            f"A recipient replied to a secure message from {brand.organization}.\n\n"
            f"Sign in to read it: {base_url}/portal/messages/{item.message_id}"
        ),
        idempotency_key=f"portal-reply:{row.id}",
        now=now,
        created_by_id=str(item.id),
    )
    return row


def sent_replies(session: Session, item: PortalItem) -> list[dict[str, Any]]:
    """What the recipient sent on this item (shown to them on the message's page):
    time, text and files' names and sizes, without opening the files."""
    rows = session.scalars(
        select(PortalReply)
        .where(PortalReply.item_id == item.id, PortalReply.tenant_id == item.tenant_id)
        .options(defer(PortalReply.attachments))
        .order_by(PortalReply.created_at, PortalReply.id)
    )
    return [{"at": r.created_at, "body": r.body, "files": r.attachment_meta or []} for r in rows]


def reply_attachment(
    session: Session,
    tenant_id: uuid.UUID,
    item_id: uuid.UUID,
    reply_id: uuid.UUID,
    index: int,
    *,
    actor: audit.Actor,
    now: datetime,
) -> dict[str, Any] | None:
    """One file of a reply (PHI) for the sender, audited
    ``portal.reply_attachment_download`` (ids and the index only)."""
    row = session.scalar(
        select(PortalReply).where(
            PortalReply.id == reply_id,
            PortalReply.item_id == item_id,
            PortalReply.tenant_id == tenant_id,
        )
    )
    files = (row.attachments or []) if row is not None else []
    if not 0 <= index < len(files):
        return None
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="portal.reply_attachment_download",
        object_type="portal_item",
        object_id=str(item_id),
        details={"reply_id": str(reply_id), "attachment": index},
    )
    found: dict[str, Any] = files[index]
    return found


REPLY_DELIVERY = "portal_reply"  # Message.created_by_type of a delivered reply
REPLY_SUBJECT = "Secure reply to your message"


def _scan_reply(session: Session, text: str, files: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The DLP summary of a reply (detector names and counts; no matched value)."""
    keys = current_tenant_keys()
    content = MessageContent(
        text=text,
        attachments=[
            DlpAttachment(f["filename"], f["content_type"], base64.b64decode(f["content"]))
            for f in files
        ],
    )
    return scan_for_tenant(session, keys, content, limits=REPLY_SCAN_LIMITS).summary.as_record()


def _deliver_reply(
    session: Session,
    item: PortalItem,
    row: PortalReply,
    files: list[dict[str, Any]],
    brand: Branding,
    *,
    now: datetime,
    base_url: str,
) -> uuid.UUID:
    """The reply itself to the original sender, through the outbox. It counts as PHI
    (``uses_phi``), so the protection stage sends it S/MIME or OpenPGP when the sender has
    a key in the key directory, by verified TLS where the domain guarantees it, and
    otherwise as the policy says (the portal, or held): never in clear. The subject
    names nothing of the message or the reply."""
    sent = item.created_at.strftime("%d %B %Y")
    return queue_notice(
        session,
        tenant_id=item.tenant_id,
        to_address=item.from_address,
        from_address=item.from_address,
        from_name=f"{brand.organization} secure portal"[:200],
        subject=REPLY_SUBJECT,
        text=(
            f"A recipient replied through the secure portal to your message of {sent}.\n\n"
            f"{row.body}\n\n"
            f"Portal message: {base_url}/portal/messages/{item.message_id}"
        ),
        idempotency_key=f"portal-reply-delivery:{row.id}",
        now=now,
        created_by_id=str(item.id),
        created_by_type=REPLY_DELIVERY,
        attachments=files,
        phi=True,
    )


def recall(session: Session, item: PortalItem, *, now: datetime, actor: audit.Actor) -> bool:
    """Take the content away at once; False when it was already gone."""
    if item.state != ItemState.ACTIVE:
        return False
    item.state = ItemState.RECALLED
    item.recalled_at = now
    item.content = None
    item.purged_at = now
    item.session_epoch += 1
    record_event(session, item, EventKind.RECALLED, now=now, actor=actor)
    return True


def expire_due(session: Session, *, now: datetime, limit: int = 500) -> int:
    """Purge the content of items past their expiry (any tenant: no keys needed)."""
    due = list(
        session.execute(
            select(PortalItem.id, PortalItem.tenant_id, PortalItem.message_id)
            .where(PortalItem.state == ItemState.ACTIVE, PortalItem.expires_at <= now)
            .limit(limit)
        ).all()
    )
    for item_id, tenant_id, message_id in due:
        session.execute(
            update(PortalItem)
            .where(PortalItem.id == item_id, PortalItem.state == ItemState.ACTIVE)
            .values(
                state=ItemState.EXPIRED,
                content=None,
                purged_at=now,
                session_epoch=PortalItem.session_epoch + 1,
            )
        )
        session.add(
            PortalEvent(
                tenant_id=tenant_id,
                item_id=item_id,
                kind=EventKind.EXPIRED,
                occurred_at=now,
                detail={},
            )
        )
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=PORTAL_ACTOR,
            action="portal.expired",
            object_type="portal_item",
            object_id=str(item_id),
            details={"message_id": str(message_id)},
        )
    return len(due)


def settings_out(session: Session, tenant_id: uuid.UUID) -> PortalSettingsOut:
    row = session.get(PortalSettings, tenant_id)
    brand = branding(session, tenant_id)
    return PortalSettingsOut(
        notice_subject=row.notice_subject if row else "",
        expiry_days=brand.expiry_days,
        logo_url=brand.logo_url,
        brand_color=brand.brand_color,
        reply_delivery=brand.reply_delivery,
        effective_notice_subject=brand.notice_subject,
    )


def save_settings(
    session: Session, tenant_id: uuid.UUID, body: PortalSettingsIn, *, actor: audit.Actor
) -> None:
    row = session.get(PortalSettings, tenant_id)
    if row is None:
        row = PortalSettings(tenant_id=tenant_id)
        session.add(row)
    row.notice_subject = body.notice_subject.strip()
    row.expiry_days = body.expiry_days
    row.logo_url = body.logo_url
    row.brand_color = body.brand_color
    row.reply_delivery = body.reply_delivery
    row.updated_at = utcnow()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="portal.settings_update",
        object_type="tenant",
        object_id=str(tenant_id),
        details={
            "expiry_days": body.expiry_days,
            "brand_color": body.brand_color,
            "reply_delivery": body.reply_delivery,
        },
    )


def _answer_hash(item: PortalItem, answer: str) -> str:
    return current_tenant_keys().blind_index("portal.answer", f"{item.id}:{normal_answer(answer)}")


def set_question(
    session: Session,
    item: PortalItem,
    question: str,
    answer: str,
    *,
    now: datetime,
    actor: audit.Actor,
) -> None:
    """The sender's question (sealed) and its answer (a keyed hash of its normal form)."""
    if not question.strip():
        raise ValidationFailed("ask a question", field="#/body/question")
    if len(question.strip()) > 300:
        raise ValidationFailed("at most 300 characters", field="#/body/question")
    if len(normal_answer(answer)) < 3 or len(answer) > 200:
        raise ValidationFailed("use an answer of 3 to 200 characters", field="#/body/answer")
    item.question = question.strip()
    item.answer_hash = _answer_hash(item, answer)
    record_event(session, item, EventKind.QUESTION_SET, now=now, actor=actor)


def verify_answer(
    session: Session, item: PortalItem, answer: str, *, now: datetime, client_address: str = ""
) -> str:
    """ "ok", "wrong", "locked" or "throttled"; the same counter and lockout as codes."""
    actor = recipient_actor(item, client_address)
    if client_throttled(session, item, now=now, client_address=client_address):
        return "throttled"
    if is_locked(item, now):
        return "locked"
    if not item.answer_hash:
        return "wrong"
    # Set after hand-off: bound to the item; set with the message: bound to its id.
    candidates = (
        _answer_hash(item, answer),
        presets.message_answer_hash(current_tenant_keys(), item.message_id, answer),
    )
    if not any(secrets.compare_digest(c, item.answer_hash) for c in candidates):
        return _fail(session, item, EventKind.ANSWER_FAILED, now=now, actor=actor)
    _opened(session, item, "question", now=now, actor=actor)
    return "ok"
