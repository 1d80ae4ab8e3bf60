"""The inbound SMTP listener (aiosmtpd) for bounces, complaints and secure replies,
and what it does with each report.

It accepts mail only for the bounce domain (``CAREPOST_BOUNCE_DOMAIN``) and, for
inbound secure replies (:mod:`carepost.gateway.replies`), for addresses of a verified
sending domain of an organization with an enabled inbound route: any other recipient
gets ``550 5.7.1 relaying denied``, so it can never be used as a relay. One
transaction is for one kind and one organization: a recipient of another gets
``452 4.5.3`` (the sender sends it in a new transaction). A secure reply is
committed to the database before ``250`` (``451`` if it cannot be), then opened and
handed to the organization's mail server after the reply, off the event loop. A
message over ``CAREPOST_INBOUND_MAX_BYTES`` gets ``552``. Everything accepted is
parsed as a DSN (RFC 3464, :mod:`carepost.delivery.bounces`) or an ARF complaint
(RFC 5965, :mod:`carepost.delivery.arf`) and mapped to its message by:

1. the envelope recipient -- the VERP return path the bounce was sent back to
   (:mod:`carepost.delivery.verp`);
2. the return path quoted in the report (``Return-Path`` of the returned headers,
   or ARF ``Original-Mail-From``);
3. the ``X-Carepost-Message`` header of the returned message (a signed token).

Only signed tokens are believed: a forged report naming a made-up message does
nothing. The address suppressed is always the *message's* recipient, never one
read from the report. Then:

* hard bounce -> suppression (reason ``hard_bounce``) at once, and ``bounced``;
* soft bounce -> ``bounced`` (a final soft failure such as a full mailbox) or
  ``deferred`` (``Action: delayed``), no suppression;
* complaint -> suppression (reason ``complaint``) and ``complained``;
  ``not-spam`` reports and success notices are accepted and dropped.

Mail to a message's unsubscribe address (``u-<token>@<bounce domain>``, the
``mailto:`` of its ``List-Unsubscribe``, RFC 2369) unsubscribes its recipient as the
one-click link does (marketing consent revoked, address suppressed for marketing,
source ``mailto``) and records ``unsubscribed`` on the message, whatever the mail
says: sending it is the request. A token that does not verify does nothing.

Anything that is not a report, or names no message of ours, is accepted and
dropped (``250``): answering an error would bounce a bounce. A processing failure
(database down) answers ``451`` so the sender retries later.

Run it with ``carepost inbound serve``; see docs/bounces-and-complaints.md.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import Session as OrmSession

from carepost.audit.service import Actor
from carepost.consent.links import InvalidLink, LinkKind, RecipientLink
from carepost.consent.recipient import unsubscribe
from carepost.consent.suppression import add_suppression
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, current_tenant_keys
from carepost.delivery import verp
from carepost.delivery.arf import parse_arf
from carepost.delivery.bounces import DsnReport, RecipientStatus, parse_dsn, redact_addresses
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.delivery.message_ledger import MessageRef, message_ledger
from carepost.gateway import replies

INBOUND_ACTOR = Actor(type="system", id="inbound", label="bounce and complaint processor")
OutcomeKind = Literal[
    "hard_bounce", "soft_bounce", "delayed", "complaint", "unsubscribed", "ignored", "unmatched"
]

log = get_logger(__name__)
_BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")


@dataclass(frozen=True)
class Outcome:
    """What one inbound message did (ids and kinds only)."""

    kind: OutcomeKind
    message_id: uuid.UUID | None = None
    suppressed: bool = False


@contextmanager
def _message_session(
    runtime: Runtime, message_id: uuid.UUID
) -> Iterator[tuple[OrmSession, TenantKeys, MessageRef] | None]:
    """A session bound to the message's tenant, its keys and the message; None when no
    message of any tenant has this id."""
    ledger = message_ledger()
    with runtime.database.session() as session:
        tenant_id = ledger.tenant_of(session, message_id)
    if tenant_id is None:
        yield None
        return
    with runtime.tenant_session(tenant_id) as session:
        keys = current_tenant_keys()
        message = ledger.find(session, keys, message_id)
        yield None if message is None else (session, keys, message)


def _first_message(candidates: list[str | None], secret: bytes) -> uuid.UUID | None:
    for candidate in candidates:
        if not candidate:
            continue
        found = verp.message_of_return_path(candidate, secret=secret)
        if found is None:
            found = verp.message_of_token(candidate, secret=secret)
        if found is not None:
            return found
    return None


def _chosen_recipient(report: DsnReport, to_address: str | None) -> RecipientStatus | None:
    failures = report.failures
    if not failures:
        return None
    if to_address:
        own = [r for r in failures if (r.recipient or "").lower() == to_address.lower()]
        if own:
            return max(own, key=lambda r: r.kind == "hard")
    return max(failures, key=lambda r: r.kind == "hard")


def process_report(
    runtime: Runtime, data: bytes, *, envelope_recipients: list[str], secret: bytes
) -> Outcome:
    """Parse one inbound message and apply it (suppression, message event)."""
    dsn = parse_dsn(data)
    complaint = parse_arf(data) if dsn is None else None
    if dsn is None and complaint is None:
        return Outcome("ignored")
    if dsn is not None:
        message_id = _first_message(
            [*envelope_recipients, dsn.original.return_path, dsn.original.carepost_message],
            secret,
        )
    else:
        assert complaint is not None
        if not complaint.is_complaint:
            return Outcome("ignored")
        message_id = _first_message(
            [
                complaint.original.return_path,
                complaint.original_mail_from,
                complaint.original.carepost_message,
                *envelope_recipients,
            ],
            secret,
        )
    if message_id is None:
        return Outcome("unmatched")
    ledger = message_ledger()
    with _message_session(runtime, message_id) as found:
        if found is None:
            return Outcome("unmatched", message_id)
        session, keys, message = found
        if complaint is not None:
            suppressed = _suppress(session, keys, message.to_address, "complaint", "complaint")
            ledger.record_event(
                session,
                keys,
                message_id,
                "complained",
                detail={
                    "feedback_type": complaint.feedback_type,
                    "user_agent": (complaint.user_agent or "")[:100],
                    "standard": complaint.standard,
                },
            )
            return Outcome("complaint", message_id, suppressed)
        assert dsn is not None
        recipient = _chosen_recipient(dsn, message.to_address)
        if recipient is None:
            return Outcome("ignored", message_id)
        suppressed = False
        if recipient.kind == "hard":
            suppressed = _suppress(session, keys, message.to_address, "hard_bounce", "bounce")
        kind: OutcomeKind = (
            "hard_bounce"
            if recipient.kind == "hard"
            else ("delayed" if recipient.action == "delayed" else "soft_bounce")
        )
        ledger.record_event(
            session,
            keys,
            message_id,
            "deferred" if kind == "delayed" else "bounced",
            detail={
                "bounce": recipient.kind,
                "action": recipient.action,
                "status": recipient.status,
                "description": recipient.description,
                "diagnostic": redact_addresses(recipient.diagnostic),
                "reporting_mta": (dsn.reporting_mta or "")[:255],
                "standard": dsn.standard,
            },
        )
        return Outcome(kind, message_id, suppressed)


def process_unsubscribe(
    runtime: Runtime, *, envelope_recipients: list[str], secret: bytes, client_address: str = ""
) -> Outcome:
    """Unsubscribe the recipient of the message the first verifying unsubscribe
    address among ``envelope_recipients`` names (see the module docstring)."""
    message_id = next(
        (
            named
            for address in envelope_recipients
            if (named := verp.message_of_unsubscribe_address(address, secret=secret))
        ),
        None,
    )
    if message_id is None:
        return Outcome("unmatched")
    ledger = message_ledger()
    with _message_session(runtime, message_id) as found:
        if found is None:
            return Outcome("unmatched", message_id)
        session, keys, message = found
        done = False
        if message.contact_id is not None:
            link = RecipientLink(
                LinkKind.UNSUBSCRIBE, message.tenant_id, message.contact_id, "email", utcnow()
            )
            try:
                unsubscribe(session, keys, link, client_address=client_address, source="mailto")
                done = True
            except InvalidLink:  # the contact is gone (erased, merged): its address then
                pass
        if not done:
            _suppress(session, keys, message.to_address, "unsubscribe", "mailto")
        ledger.record_event(session, keys, message_id, "unsubscribed", detail={"source": "mailto"})
        return Outcome("unsubscribed", message_id, True)


def _suppress(
    session: OrmSession, keys: TenantKeys, address: str | None, reason: str, source: str
) -> bool:
    if not address:
        return False
    try:
        _entry, _created = add_suppression(
            session, keys, address=address, reason=reason, source=source, actor=INBOUND_ACTOR
        )
    except ValidationFailed:
        # Not an address suppression can hold (the outbox validated it; keep going).
        log.warning("inbound.unsuppressible_address", reason=reason)
        return False
    return True


class BounceHandler:
    """aiosmtpd handler: RCPT policy (the bounce domain, organizations' reply
    addresses) and DATA processing."""

    def __init__(self, runtime: Runtime, *, bounce_domain: str, secret: bytes) -> None:
        self.runtime = runtime
        self.bounce_domain = bounce_domain.lower().rstrip(".")
        self.secret = secret
        self.delivering: set[asyncio.Future[str]] = set()

    def _reply_tenant(self, address: str) -> uuid.UUID | None:
        with self.runtime.database.session() as session:
            return replies.tenant_for_recipient(session, address)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local, _, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".")
        kind: tuple[str, uuid.UUID | None]
        if domain == self.bounce_domain:
            unsubscribing = local.lower().startswith(verp.UNSUBSCRIBE_PREFIX)
            kind = ("unsubscribe" if unsubscribing else "report", None)
        else:
            try:
                tenant_id = await asyncio.get_running_loop().run_in_executor(
                    None, self._reply_tenant, address
                )
            except Exception as exc:  # noqa: BLE001 - the sender retries later
                log.error("inbound.rcpt_failed", error=type(exc).__name__)
                return "451 4.3.0 Temporary failure, try again later"
            if tenant_id is None:
                return "550 5.7.1 Relaying denied"
            kind = ("reply", tenant_id)
        chosen = getattr(envelope, "carepost_kind", None)
        if chosen is not None and chosen != kind:
            return "452 4.5.3 Too many recipients"  # another kind or organization: later
        envelope.carepost_kind = kind  # type: ignore[attr-defined]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        kind = getattr(envelope, "carepost_kind", ("report", None))
        if kind[0] == "reply" and isinstance(kind[1], uuid.UUID):
            return await self._reply(envelope, kind[1], data)
        recipients = list(envelope.rcpt_tos)
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: (
                    process_unsubscribe(
                        self.runtime,
                        envelope_recipients=recipients,
                        secret=self.secret,
                        client_address=str((session.peer or ("",))[0]),
                    )
                    if kind[0] == "unsubscribe"
                    else process_report(
                        self.runtime, data, envelope_recipients=recipients, secret=self.secret
                    )
                ),
            )
        except Exception as exc:  # noqa: BLE001 - the sender must retry, not lose the report
            log.error("inbound.failed", error=type(exc).__name__)
            return "451 4.3.0 Temporary failure, try again later"
        log.info(
            "inbound.report",
            outcome=outcome.kind,
            message_id=str(outcome.message_id) if outcome.message_id else None,
            suppressed=outcome.suppressed,
        )
        return "250 2.0.0 OK"

    async def _reply(self, envelope: Envelope, tenant_id: uuid.UUID, data: bytes) -> str:
        if _BARE.search(data):
            return "550 5.6.0 Bare LF or CR in message data refused (RFC 5321)"
        loop = asyncio.get_running_loop()
        try:
            reply_id = await loop.run_in_executor(
                None,
                lambda: replies.store_reply(
                    self.runtime,
                    tenant_id,
                    mail_from=envelope.mail_from or "",
                    recipients=list(envelope.rcpt_tos),
                    data=data,
                ),
            )
        except Exception as exc:  # noqa: BLE001 - the sender must retry, never lose a reply
            log.error("inbound.reply_store_failed", error=type(exc).__name__)
            return "451 4.3.0 Temporary failure, try again later"
        log.info("inbound.reply_received", reply=str(reply_id), bytes=len(data))
        future = loop.run_in_executor(None, self._deliver, tenant_id, reply_id)
        self.delivering.add(future)
        future.add_done_callback(self.delivering.discard)
        return f"250 2.0.0 OK queued as {reply_id}"

    def _deliver(self, tenant_id: uuid.UUID, reply_id: uuid.UUID) -> str:
        try:
            return replies.deliver_reply(self.runtime, tenant_id, reply_id)
        except Exception as exc:  # noqa: BLE001 - stored: the worker's job retries it
            log.error("inbound.reply_failed", reply=str(reply_id), error=type(exc).__name__)
            return "error"

    async def replies_done(self) -> None:
        """Wait for the deliveries started so far (tests, shutdown)."""
        while self.delivering:
            await asyncio.gather(*list(self.delivering), return_exceptions=True)


def inbound_controller(
    runtime: Runtime, *, host: str | None = None, port: int | None = None
) -> Controller:
    """A controller running the listener in a thread (``.start()`` / ``.stop()``)."""
    settings = runtime.settings
    handler = BounceHandler(
        runtime,
        bounce_domain=settings.bounce_domain,
        secret=cached_feedback_secret(settings),
    )
    return Controller(
        handler,
        hostname=host or settings.inbound_host,
        port=port or settings.inbound_port,
        data_size_limit=settings.inbound_max_bytes,
        ident="carepost bounce processor",
    )
