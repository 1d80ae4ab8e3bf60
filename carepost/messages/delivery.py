"""The delivery loop: claim due messages, hand them to the transport, record each outcome.

Claiming is one statement (queries below): the due rows in priority order, then
by due time, locked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number
of workers take disjoint batches; SQLite's single write lock (``BEGIN
IMMEDIATE``) makes its one claimer atomic. A claim moves the rows to ``sending``
with a lease and is **committed before** the SMTP transaction starts; the outcome
of each envelope is committed (in a group commit shared by the lanes,
:class:`OutcomeWriter`) before its lane starts another transaction. A worker that
dies leaves its rows in ``sending``; once the lease passes any worker puts them
back in the queue (``deferred``, with a ``lease_expired`` event) and they go out
again. The one window in which a message can reach the receiver twice is between
the server's final 250 to DATA and the commit of that outcome
(docs/email-delivery.md): at most the envelopes in flight when a worker dies.

Outcomes: ``delivered`` on 2xx; ``deferred`` on 4xx or a connection failure, with
the next attempt from the retry schedule (exponential backoff with jitter) until
the message's lifetime is over, then ``bounced``; ``bounced`` at once on 5xx, and
a hard bounce (bad mailbox: 5.1.x, or 550/551/553 without an enhanced code) also
suppresses the address (:func:`carepost.consent.suppression.add_suppression`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, text, true, update
from sqlalchemy.orm import Session, defer

from carepost.audit import service as audit
from carepost.consent.decision import Channel, SuppressionMatch, may_send
from carepost.consent.decision import Decision as ConsentDecision
from carepost.consent.links import LinkKind, make_token
from carepost.consent.suppression import add_suppression
from carepost.contacts.id_sets import dialect_of, id_in
from carepost.core.config import Settings
from carepost.core.database import in_index_order, utcnow
from carepost.core.errors import CarepostError
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.delivery.dkim import DkimSigner
from carepost.gateway.raw import gateway_message_bytes, is_raw
from carepost.messages import ports, sending
from carepost.messages.events import EventRow, write_events
from carepost.messages.models import MESSAGES_TABLE, Message, MessageState
from carepost.policy.decision import Decision
from carepost.protection import fallback as protection_fallback
from carepost.protection.facts import address_key
from carepost.protection.stage import ProtectionStage, protection_values
from carepost.tracking.service import TrackingChoice, tracking_choice

log = get_logger(__name__)

HARD_BOUNCE_CODES = frozenset({550, 551, 553})
_ADDRESS = re.compile(r"\S+@\S+")
# The literal predicate of the partial indexes (a bound parameter would hide it from
# the planner, which then cannot use ix_messages_due / ix_messages_leases).
DUE = text("messages.state IN ('queued', 'deferred')")
LEASED = text("messages.state = 'sending'")
BOUNCER = audit.Actor("system", "", "carepost delivery")


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    tenant_id: uuid.UUID


def recover_expired_leases(session: Session, *, now: datetime) -> int:
    """Put back in the queue what a dead worker had claimed (its lease is over)."""
    recovered = session.execute(
        update(Message)
        .where(LEASED, Message.lease_until < now)
        .values(
            state=MessageState.DEFERRED,
            next_attempt_at=now,
            lease_until=None,
            lease_owner="",
            state_reason="lease_expired",
        )
        .returning(Message.id, Message.tenant_id, Message.contact_id)
    ).all()
    by_tenant: dict[uuid.UUID, list[EventRow]] = defaultdict(list)
    for message_id, tenant_id, contact_id in recovered:
        by_tenant[tenant_id].append((message_id, contact_id, "deferred", {"lease_expired": True}))
    for tenant_id, events in by_tenant.items():
        # No keys are bound here (webhooks need them): a lease running out is the
        # worker's affair, not a delivery outcome to report.
        write_events(session, tenant_id, events, now=now, webhooks=False)
    return len(recovered)


def claim_due_messages(
    session: Session, *, owner: str, limit: int, now: datetime, lease: timedelta
) -> list[Claimed]:
    """Claim up to ``limit`` due messages, high priority first, then the longest waiting."""
    due = (
        select(Message.id)
        .where(DUE, Message.next_attempt_at <= now)
        .order_by(Message.priority, Message.next_attempt_at)
        .limit(limit)
    )
    if dialect_of(session) == "postgresql":
        due = due.with_for_update(skip_locked=True)
    chosen = due.cte("due")
    # ix_messages_due walked in its order up to the limit, whatever the statistics
    # say: reading and sorting every due row costs 50-70 ms a claim at 100,000.
    with in_index_order(session):
        claimed = session.execute(
            update(Message)
            .where(Message.id == chosen.c.id)
            .values(
                state=MessageState.SENDING,
                lease_until=now + lease,
                lease_owner=owner,
                attempts=Message.attempts + 1,
            )
            .returning(Message.id, Message.tenant_id)
        ).all()
    return [Claimed(message_id, tenant_id) for message_id, tenant_id in claimed]


@dataclass
class Outgoing:
    """One envelope ready to go, and the message (by recipient) it carries."""

    envelope: ports.Envelope
    messages: dict[str, Message] = field(default_factory=dict)  # recipient -> message
    # recipient -> the protection decision, written on the row with the outcome
    decisions: dict[str, Decision] = field(default_factory=dict)


def _attachments(message: Message) -> tuple[ports.Attachment, ...]:
    return tuple(
        ports.Attachment(a["filename"], a["content_type"], base64.b64decode(a["content"]))
        for a in message.attachments or []
    )


def _outgoing_message(
    message: Message,
    keys: TenantKeys,
    settings: Settings,
    from_domain: str,
    tracking: TrackingChoice,
    secret: bytes,
    token: str,
) -> ports.OutgoingMessage:
    """The message to build; ``token`` is its return token (ports.return_token)."""
    base_url = settings.base_url
    unsubscribe_url = unsubscribe_mailto = None
    if message.purpose != "transactional" and message.contact_id is not None:
        link = make_token(keys, LinkKind.UNSUBSCRIBE, message.contact_id, "email")
        # ``m`` (the return token: no id in clear, no PHI) names the message the
        # recipient unsubscribed from, for its ``unsubscribed`` event.
        unsubscribe_url = f"{base_url}/u/{link}?m={token}"
        # RFC 2369's mailto: beside RFC 8058's one-click URI, for the mail clients
        # that only send mail (the inbound listener takes it: delivery/inbound.py).
        address = ports.unsubscribe_address_of(token, bounce_domain=settings.bounce_domain)
        unsubscribe_mailto = f"mailto:{address}?subject=unsubscribe"
    body = message.body
    html = body.get("html")
    if html is not None and (tracking.track_opens or tracking.track_clicks):
        html = ports.tracked_html(
            html,
            message_id=message.id,
            base_url=base_url,
            secret=secret,
            opens=tracking.track_opens,
            clicks=tracking.track_clicks,
        )
    return ports.OutgoingMessage(
        from_address=message.from_address,
        from_name=message.from_name,
        to_address=message.to_address,
        to_name=message.to_name,
        reply_to=message.reply_to,
        subject=message.subject,
        html=html,
        text=body.get("text") or "",
        attachments=_attachments(message),
        # Stable across retries: a receiver that got the message twice (the duplicate
        # window) deduplicates by it.
        message_id=f"{message.id}@{from_domain}",
        list_unsubscribe_url=unsubscribe_url,
        list_unsubscribe_mailto=unsubscribe_mailto,
        # The signed token (no PHI) finds the message again from a report that
        # quotes only the headers (inbound.py).
        headers={"X-Carepost-Message": token},
    )


class _NotBuilt(EmailMessage):
    """In place of the built message where the protection stage does not read it
    (:func:`_stage_reads_the_message`); reading it anyway raises, which fails that
    message loudly instead of deciding on an empty one."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("the protection stage read a message that was not built")


NOT_BUILT: EmailMessage = object.__new__(_NotBuilt)


def _stage_reads_the_message(protection: ProtectionStage, message: Message) -> bool:
    """Whether the protection stage needs the built ``EmailMessage``: to encrypt it
    (E2E is decided only for a recipient with a valid S/MIME or OpenPGP key,
    carepost.policy.decision) or to scan a message stored without text or HTML
    (carepost.protection.facts). Otherwise it decides from the stored content."""
    body = message.body or {}
    if body.get("text") is None and body.get("html") is None:
        return True
    states = protection.key_states.get(address_key(message.to_address))
    return states is not None and "valid" in (states.smime, states.openpgp)


def prepare_envelopes(
    session: Session, keys: TenantKeys, ids: Sequence[uuid.UUID], *, settings: Settings
) -> list[Outgoing]:
    """Build, track and sign each claimed message: one envelope each, since each has
    its own VERP return path (the bounce names the message)."""
    query = (
        select(Message)
        .where(
            id_in(Message.id, set(ids), dialect_of(session)),
            # Checked on each row the primary key finds, never used to find them: planned
            # from statistics that missed a burst of new rows, a tenant looks small, and
            # PostgreSQL would read all its rows (100,000: 66-89 ms) to pick out 200.
            (Message.tenant_id == keys.tenant_id).is_(true()),
        )
        .options(
            # Not sent and never read on the way out: not fetched, not decrypted (two
            # AES-GCM opens a message). A deferred column read in this session would be
            # loaded then; the writer of outcomes, in another, reads none of them.
            defer(Message.data),
            defer(Message.meta),
            defer(Message.tags),
        )
    )
    secret = ports.cached_feedback_secret(settings)
    tracking = tracking_choice(session, keys.tenant_id)
    prepared: list[Outgoing] = []
    failed: list[EventRow] = []
    signers: dict[str, list[DkimSigner]] = {}  # per From domain: one lookup a batch
    messages = list(session.scalars(query))
    # Consent and suppression again: an unsubscribe, a bounce or a complaint since the
    # message was queued stops it now (a campaign queues hours of mail at once).
    refused = refused_now(session, keys.tenant_id, messages, utcnow())
    if refused:
        messages = [message for message in messages if message.id not in refused]
    # DLP, policy decision, E2E encryption, portal and block (carepost/protection).
    protection = ProtectionStage.for_batch(session, keys, messages, settings=settings, now=utcnow())
    for message in messages:
        try:
            domain = ports.domain_of(message.from_address)
            if domain not in signers:
                signers[domain] = ports.signing_keys_for(session, keys, domain)
            token = ports.return_token(message.id, secret=secret)
            if is_raw(message.body):
                # Relayed by the SMTP gateway: the customer's MIME, as it came; parsed
                # only for the protection stage, sent as the bytes it came in.
                raw = gateway_message_bytes(
                    message.id, message.body, from_domain=domain, token=token
                )
                built = message_from_bytes(raw, policy=email_policy.default)
            else:
                outgoing = _outgoing_message(
                    message, keys, settings, domain, tracking, secret, token
                )
                if _stage_reads_the_message(protection, message):
                    built = ports.build_message(outgoing)
                    raw = ports.message_bytes(built)
                else:
                    # Written straight to bytes (the email package's objects cost
                    # more than both signatures), for the stage to decide on.
                    built = NOT_BUILT
                    raw = ports.build_bytes(outgoing)
            protected = protection.protect(message, built)
            if protected.held:
                continue  # to the portal, or blocked: recorded by the stage
            data = ports.sign_all(protected.data or raw, signers[domain])
        except Exception as exc:  # noqa: BLE001 - one unbuildable message must not stall the rest
            # Retrying cannot help (say, an address the message format cannot carry).
            failed.append((message.id, message.contact_id, "failed", {"error": type(exc).__name__}))
            continue
        # The same token as in the X-Carepost-Message header.
        mail_from = ports.return_path_of(token, bounce_domain=settings.bounce_domain)
        envelope = ports.Envelope(
            mail_from,
            (message.to_address,),
            data,
            tls=protected.tls,
            mx_patterns=protected.mx_patterns,
        )
        decided = {message.to_address: protected.decision} if protected.decision else {}
        prepared.append(Outgoing(envelope, {message.to_address: message}, decided))
    protection.finish()
    for message_id, (contact_id, reasons) in refused.items():
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.state == MessageState.SENDING)
            .values(
                state=MessageState.SUPPRESSED,
                state_reason=",".join(reasons)[:200],
                lease_until=None,
                lease_owner="",
            )
        )
        failed.append(
            (message_id, contact_id, "suppressed", {"reasons": list(reasons), "at": "delivery"})
        )
    for message_id, _contact, kind, detail in failed:
        if kind != "failed":
            continue
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.state == MessageState.SENDING)
            .values(
                state=MessageState.FAILED,
                state_reason=f"the message could not be built ({detail['error']})",
                lease_until=None,
                lease_owner="",
            )
        )
    write_events(session, keys.tenant_id, failed)
    return prepared


def refused_now(
    session: Session, tenant_id: uuid.UUID, messages: Sequence[Message], now: datetime
) -> dict[uuid.UUID, tuple[uuid.UUID | None, tuple[str, ...]]]:
    """The messages that may no longer go, by id: (contact id, the refusal's reasons).

    The same decision as when they were queued (``may_send``), on the suppressions and
    consents of now: two queries for the batch."""
    if not messages:
        return {}
    suppressions = sending.suppressions_by_index(session, tenant_id, {m.to_index for m in messages})
    consents = sending.email_consents(
        session, tenant_id, {m.contact_id for m in messages if m.contact_id is not None}
    )
    refused = {}
    # Without consents recorded the decision depends on these alone: made once each.
    shared: dict[tuple[SuppressionMatch | None, str, bool], ConsentDecision] = {}
    for message in messages:
        contact_consents = consents.get(message.contact_id) if message.contact_id else None
        suppression = suppressions.get(message.to_index)
        if contact_consents:
            decision = may_send(
                contact_consents, suppression, Channel.EMAIL, message.purpose, message.uses_phi, now
            )
        else:
            key = (suppression, message.purpose, message.uses_phi)
            decision = shared.get(key) or shared.setdefault(
                key, may_send({}, suppression, Channel.EMAIL, *key[1:], now)
            )
        if not decision.allowed:
            refused[message.id] = (message.contact_id, decision.reasons)
    return refused


def server_reply(outcome: ports.RecipientOutcome) -> str:
    """The server's answer as stored: its codes and words, any address in it masked."""
    words = " ".join(_ADDRESS.sub("<address>", outcome.text).split())
    enhanced = outcome.enhanced or ""
    if enhanced and words.startswith(enhanced):
        enhanced = ""  # the server's text begins with it already
    return " ".join(str(p) for p in (outcome.code or "", enhanced, words) if p)[:200]


def is_hard_bounce(outcome: ports.RecipientOutcome) -> bool:
    if outcome.status != "bounced":
        return False
    if outcome.enhanced is not None:
        return outcome.enhanced.startswith("5.1.")
    return outcome.code in HARD_BOUNCE_CODES


def record_outcomes(
    session: Session,
    keys: TenantKeys,
    outgoing: Outgoing,
    report: ports.DeliveryReport,
    *,
    owner: str,
    lifetime: timedelta,
    now: datetime | None = None,
) -> dict[str, int]:
    """Write what the server said for each recipient; returns counts per outcome."""
    return record_results(
        session, keys, [(outgoing, report)], owner=owner, lifetime=lifetime, now=now
    )


def record_results(
    session: Session,
    keys: TenantKeys,
    results: Sequence[tuple[Outgoing, ports.DeliveryReport]],
    *,
    owner: str,
    lifetime: timedelta,
    now: datetime | None = None,
) -> dict[str, int]:
    """Write the outcomes of several envelopes in one go; returns counts per outcome.

    Deliveries (nearly all of them) are one UPDATE per distinct server reply, a
    deferral or bounce one UPDATE each. Only rows still ``sending`` under this
    worker's lease change: a row another worker took over (our lease ran out)
    keeps that worker's outcome and counts as ``lost`` here."""
    now = now or utcnow()
    counts: dict[str, int] = defaultdict(int)
    events: list[EventRow] = []
    # By server reply and protection decision: one UPDATE per distinct pair.
    delivered: dict[tuple[str, str], list[tuple[Message, dict[str, Any]]]] = defaultdict(list)
    protection: dict[str, dict[str, Any]] = {}
    for outgoing, report in results:
        answered = {outcome.recipient: outcome for outcome in report.outcomes}
        for recipient, message in outgoing.messages.items():
            outcome = answered.get(recipient) or ports.RecipientOutcome(
                recipient, "deferred", None, None, "no answer for this recipient"
            )
            reply = server_reply(outcome)
            detail: dict[str, Any] = {
                "attempt": message.attempts,
                "code": outcome.code,
                "enhanced": outcome.enhanced,
                "reply": reply,
                "host": report.host,
                "tls": report.tls,
            }
            decided = protection_values(outgoing.decisions.get(recipient))
            if outcome.status == "delivered":
                key = repr(sorted(decided.items()))
                protection[key] = decided
                delivered[(reply, key)].append((message, detail))
                continue
            kind = "deferred"
            if outcome.status == "tls_unavailable":
                # Never in the clear: the policy's fallback (portal, or wait and bounce).
                kind = protection_fallback.tls_unavailable(
                    session,
                    keys,
                    message,
                    outgoing.decisions.get(recipient),
                    detail,
                    owner=owner,
                    now=now,
                )
            if kind == "deferred":
                kind = _record_failure(
                    session,
                    keys,
                    message,
                    outcome,
                    detail,
                    owner=owner,
                    lifetime=lifetime,
                    now=now,
                    protection=decided,
                )
            counts[kind] += 1
            if kind not in ("lost", "portal"):
                events.append((message.id, message.contact_id, kind, detail))
    dialect = dialect_of(session)
    for (reply, decided_key), group in delivered.items():
        # On the table, not the entity: no ORM bulk-update machinery for each commit.
        changed = set(
            session.scalars(
                update(MESSAGES_TABLE)
                .where(
                    id_in(MESSAGES_TABLE.c.id, {message.id for message, _detail in group}, dialect),
                    MESSAGES_TABLE.c.state == MessageState.SENDING,
                    MESSAGES_TABLE.c.lease_owner == owner,
                )
                .values(
                    state=MessageState.DELIVERED,
                    state_reason=reply,
                    sent_at=now,
                    last_event_at=now,
                    lease_until=None,
                    lease_owner="",
                    **protection[decided_key],
                )
                .returning(MESSAGES_TABLE.c.id)
            )
        )
        for message, detail in group:
            if message.id in changed:
                counts["delivered"] += 1
                events.append((message.id, message.contact_id, "delivered", detail))
            else:
                counts["lost"] += 1  # another worker took it over: its outcome stands
    write_events(session, keys.tenant_id, events, now=now)
    protection_fallback.note_tls(session, results)
    return dict(counts)


def _record_failure(
    session: Session,
    keys: TenantKeys,
    message: Message,
    outcome: ports.RecipientOutcome,
    detail: dict[str, Any],
    *,
    owner: str,
    lifetime: timedelta,
    now: datetime,
    protection: dict[str, Any] | None = None,
) -> str:
    """Record a deferral (or, past the lifetime, a bounce) or a bounce; returns the
    kind of event, or ``lost`` when the row is no longer ours."""
    reply = detail["reply"]
    values: dict[str, Any] = {"lease_until": None, "lease_owner": "", "last_event_at": now}
    values.update(protection or {})
    kind: str = outcome.status
    if outcome.status in ("deferred", "tls_unavailable"):
        retry_at = ports.next_attempt(
            message.attempts, message.first_queued_at, now, lifetime=lifetime
        )
        if retry_at is None:
            kind = "bounced"
            detail["expired"] = True
            reply = f"expired after {message.attempts} attempts: {reply}"[:200]
        else:
            values["next_attempt_at"] = retry_at
            detail["next_attempt_at"] = retry_at.isoformat()
    if kind == "tls_unavailable":  # the policy says wait: as a deferral
        kind = "deferred" if "next_attempt_at" in values else "bounced"
    values["state"] = {
        "deferred": MessageState.DEFERRED,
        "bounced": MessageState.BOUNCED,
    }[kind]
    values["state_reason"] = reply
    changed = session.execute(
        update(Message)
        .where(
            Message.id == message.id,
            Message.state == MessageState.SENDING,
            Message.lease_owner == owner,
        )
        .values(**values)
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        # Another worker took it over (our lease ran out): its outcome stands.
        return "lost"
    if kind == "bounced" and is_hard_bounce(outcome):
        add_suppression(
            session,
            keys,
            address=message.to_address,
            reason="hard_bounce",
            source="bounce",
            actor=BOUNCER,
        )
        detail["suppressed"] = True
    return kind


class OutcomeWriter:
    """Group commit of delivery outcomes.

    Each lane hands in the report of its envelope and waits until it is committed
    before it starts another SMTP transaction; one transaction (per tenant) writes
    every report waiting at that moment, in a thread so the other lanes' SMTP goes
    on meanwhile. So a worker never has more accepted-but-unrecorded messages than
    it has lanes (``outbox_concurrency``): the duplicate window stays what it was
    with one commit per envelope, at a fraction of the commits.

    While other lanes are in an SMTP transaction, a commit first waits up to
    ``linger`` seconds (``outbox_commit_linger_seconds``) for their reports, or until
    none is left in one: a commit's statements cost nearly the same for one report
    as for twenty, so fewer, larger commits save the worker's and the database's CPU
    (as PostgreSQL's own ``commit_delay`` does for its WAL flushes)."""

    def __init__(
        self,
        runtime: Runtime,
        keys_of: dict[uuid.UUID, TenantKeys],
        *,
        owner: str,
        run: DeliveryRun,
    ) -> None:
        self.runtime = runtime
        self.keys_of = keys_of
        self.owner = owner
        self.run = run
        self._waiting: list[tuple[uuid.UUID, Outgoing, ports.DeliveryReport]] = []
        self._written: set[int] = set()
        self._lock = asyncio.Lock()
        self._failed: BaseException | None = None
        self.commits = 0  # group commits so far (one per tenant in them)
        self.linger = runtime.settings.outbox_commit_linger_seconds
        self._in_flight = 0  # lanes in an SMTP transaction: their reports come soon
        self._quiet = asyncio.Event()  # set when none is

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Around a lane's SMTP transaction, whose report is then on its way."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()

    async def record(
        self, tenant_id: uuid.UUID, outgoing: Outgoing, report: ports.DeliveryReport
    ) -> None:
        """Returns once ``report`` is committed (written by this call or another's)."""
        self._waiting.append((tenant_id, outgoing, report))
        async with self._lock:
            if self._failed is not None:
                # The write that held this report failed: the row stays ``sending``
                # and goes out again once the lease is over, as after a crash.
                raise self._failed
            if id(outgoing) in self._written:
                self._written.discard(id(outgoing))
                return
            if self.linger and self._in_flight:
                self._quiet.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._quiet.wait()
            batch, self._waiting = self._waiting, []
            try:
                counts = await asyncio.to_thread(self._write, batch)
            except BaseException as exc:
                self._failed = exc
                raise
            self._written.update(id(item[1]) for item in batch)
            self._written.discard(id(outgoing))
        for name, count in counts.items():
            self.run.outcomes[name] += count

    def _write(
        self, batch: list[tuple[uuid.UUID, Outgoing, ports.DeliveryReport]]
    ) -> dict[str, int]:
        lifetime = self.runtime.settings.delivery_lifetime
        by_tenant: dict[uuid.UUID, list[tuple[Outgoing, ports.DeliveryReport]]] = defaultdict(list)
        for tenant_id, outgoing, report in batch:
            by_tenant[tenant_id].append((outgoing, report))
        total: dict[str, int] = defaultdict(int)
        for tenant_id, results in by_tenant.items():
            keys = self.keys_of[tenant_id]
            with self.runtime.bound_session(keys) as session:
                counts = record_results(session, keys, results, owner=self.owner, lifetime=lifetime)
            self.commits += 1
            for name, count in counts.items():
                total[name] += count
        return dict(total)


@dataclass
class DeliveryRun:
    """Counts of one run of the delivery job."""

    claimed: int = 0
    recovered: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def deliver_due_messages(
    runtime: Runtime, *, budget_seconds: float | None = None, owner: str | None = None
) -> DeliveryRun:
    """Claim and deliver batches until nothing is due or the budget is spent."""
    settings = runtime.settings
    budget = (
        budget_seconds if budget_seconds is not None else settings.outbox_deliver_budget_seconds
    )
    run = DeliveryRun()
    with runtime.database.session() as session:
        run.recovered = recover_expired_leases(session, now=utcnow())
    _run_to_completion(
        _deliver_batches(
            runtime, run, deadline=time.monotonic() + budget, owner=owner or worker_name()
        )
    )
    return run


async def _deliver_batches(
    runtime: Runtime, run: DeliveryRun, *, deadline: float, owner: str
) -> None:
    """Claim, prepare and send batch after batch on one event loop.

    ``outbox_concurrency`` lanes take the prepared envelopes from one queue; each
    sends its envelope and waits for the commit of its outcome before it takes the
    next. Once fewer envelopes wait than there are lanes, the next batch is claimed
    and prepared, while the last ones of this batch are still on the wire or being
    committed: the CPU the preparation needs is spent when it would otherwise wait.
    Claiming and preparing block the loop (the lanes' SMTP replies wait in their
    sockets meanwhile). One transport serves every batch: its SMTP connections carry
    on from one batch to the next, and its per-domain limits hold for all lanes."""
    settings = runtime.settings
    lease = timedelta(seconds=settings.outbox_lease_seconds)
    keys_of: dict[uuid.UUID, TenantKeys] = {}
    transport = ports.transport_from_settings(settings)
    writer = OutcomeWriter(runtime, keys_of, owner=owner, run=run)
    queue: asyncio.Queue[tuple[uuid.UUID, Outgoing] | None] = asyncio.Queue()
    hungry = asyncio.Event()  # fewer envelopes wait than there are lanes

    async def lane() -> None:
        while (item := await queue.get()) is not None:
            if queue.qsize() < settings.outbox_concurrency:
                hungry.set()
            tenant_id, outgoing = item
            with writer.in_flight():
                report = await transport.deliver(outgoing.envelope)
            await writer.record(tenant_id, outgoing, report)

    lanes = [asyncio.create_task(lane()) for _ in range(settings.outbox_concurrency)]
    try:
        while time.monotonic() < deadline:
            claimed = _claim(runtime, keys_of, owner=owner, lease=lease)
            # Committed: the rows are ours (state sending, leased) before any SMTP traffic.
            if not claimed:
                break
            run.claimed += len(claimed)
            for item in _prepare_claimed(runtime, keys_of, claimed):
                queue.put_nowait(item)
            hungry.clear()
            if queue.qsize() < settings.outbox_concurrency:
                hungry.set()  # a short batch (or all of it held): claim again at once
            await _hungry_or_failed(hungry, lanes)
        for _ in lanes:
            queue.put_nowait(None)  # each lane ends once the queue is empty
        await asyncio.gather(*lanes)
    finally:
        for task in lanes:
            task.cancel()  # only left running when something failed
        await asyncio.gather(*lanes, return_exceptions=True)
        await transport.aclose()


async def _hungry_or_failed(hungry: asyncio.Event, lanes: list[asyncio.Task[None]]) -> None:
    """Wait until the lanes want more work; raise what a lane failed with."""
    waiting = asyncio.ensure_future(hungry.wait())
    try:
        await asyncio.wait([waiting, *lanes], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    for task in lanes:
        if task.done():
            task.result()  # a lane only ends early by failing (a write of outcomes)


def _claim(
    runtime: Runtime, keys_of: dict[uuid.UUID, TenantKeys], *, owner: str, lease: timedelta
) -> list[Claimed]:
    with runtime.database.session() as session:
        claimed = claim_due_messages(
            session,
            owner=owner,
            limit=runtime.settings.outbox_claim_batch,
            now=utcnow(),
            lease=lease,
        )
        for tenant_id in {c.tenant_id for c in claimed} - set(keys_of):
            keys_of[tenant_id] = runtime.keyring.load(session, tenant_id)
    return claimed


def _prepare_claimed(
    runtime: Runtime, keys_of: dict[uuid.UUID, TenantKeys], claimed: Sequence[Claimed]
) -> list[tuple[uuid.UUID, Outgoing]]:
    work: list[tuple[uuid.UUID, Outgoing]] = []
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for item in claimed:
        by_tenant[item.tenant_id].append(item.id)
    for tenant_id, ids in by_tenant.items():
        keys = keys_of[tenant_id]
        try:
            with runtime.bound_session(keys) as session:
                prepared = prepare_envelopes(session, keys, ids, settings=runtime.settings)
        except CarepostError as exc:
            log.error("messages.prepare_failed", count=len(ids), error=exc.detail)
            continue
        work += [(tenant_id, outgoing) for outgoing in prepared]
    return work


def _run_to_completion(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the delivery coroutine on an event loop of its own.

    ``carepost worker`` calls this from plain threads; a caller that already runs an
    event loop in this thread (an async host, a test driving a browser) cannot nest
    ``asyncio.run``, so the delivery then gets a thread of its own and is waited for.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery") as pool:
        pool.submit(asyncio.run, coroutine).result()
