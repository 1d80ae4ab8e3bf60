"""Sending queued webhook deliveries: claim, POST, log, retry with backoff.

One round (:func:`deliver_due`):

1. *Claim* due rows (pending and due, or ``sending`` with an expired lease -- a
   worker that died mid-round) and lease them, in a short transaction:
   ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number of workers share the
   queue; SQLite has one writer at a time, so its claim is already exclusive.
2. *Read* each delivery's payload and its endpoint's secrets with the tenant's keys.
3. *POST* outside any transaction (a slow receiver never holds a database lock),
   signed (:mod:`carepost.webhooks.signing`), redirects not followed; up to
   :data:`PARALLEL_ENDPOINTS` endpoints at once, each endpoint's deliveries in order.
4. *Record* the attempt in the delivery log (status code, duration, a short error --
   never the response body) and move the delivery on: ``delivered`` on 2xx, else
   back to ``pending`` after an exponential backoff with jitter, or ``failed`` once
   ``webhook_max_attempts`` attempts are spent.

Delivery is at least once: a worker killed between the POST and step 4 leaves a
leased row that another worker sends again after the lease; receivers de-duplicate
by the event ``id`` in the body (docs/webhooks.md).
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, or_, select, true, update

from carepost.core.database import new_id, utcnow
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from carepost.webhooks.signing import HEADER, signature_header

BATCH = 100
# Endpoints sent to at once in a round (each endpoint's own deliveries go in order).
PARALLEL_ENDPOINTS = 8
# Long enough for a round of slow endpoints; a crashed worker's claims return after it.
LEASE = timedelta(minutes=15)
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
USER_AGENT = "carepost-webhooks/1"

log = get_logger(__name__)


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter: 30 s, 1 min, 2 min ... capped at 6 h, each
    scaled by a random factor in [0.5, 1) so failing endpoints do not pulse in step."""
    ceiling: timedelta = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, min(attempts, 30) - 1)))
    factor: float = (rng or random).uniform(0.5, 1.0)
    return ceiling * factor


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery, ready to send."""

    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    attempt: int
    url: str | None  # None: the endpoint is gone or disabled
    secrets: tuple[str, ...]
    body: bytes
    event_type: str
    event_id: uuid.UUID


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(
    runtime: Runtime,
    *,
    now: datetime,
    limit: int = BATCH,
    tenant_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Lease up to ``limit`` due deliveries (of one tenant when given: tests and tools);
    returns (delivery id, tenant id) pairs."""
    with runtime.database.session() as session:
        due = or_(
            and_(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now),
            and_(WebhookDelivery.state == "sending", WebhookDelivery.lease_until < now),
        )
        query = (
            select(WebhookDelivery.id, WebhookDelivery.tenant_id)
            .where(due)
            .where(true() if tenant_id is None else WebhookDelivery.tenant_id == tenant_id)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if not runtime.database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = [(row.id, row.tenant_id) for row in session.execute(query)]
        if rows:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([delivery_id for delivery_id, _ in rows]))
                .values(state="sending", lease_until=now + LEASE)
            )
        return rows


def _prepare(
    runtime: Runtime, tenant_id: uuid.UUID, delivery_ids: list[uuid.UUID], now: datetime
) -> list[Outgoing]:
    with runtime.tenant_session(tenant_id) as session:
        deliveries = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id.in_(delivery_ids)
            )
        ).all()
        endpoint_ids = {delivery.endpoint_id for delivery in deliveries}
        endpoints = {
            endpoint.id: endpoint
            for endpoint in session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id.in_(endpoint_ids)
                )
            )
        }
        prepared = []
        for delivery in deliveries:
            endpoint = endpoints.get(delivery.endpoint_id)
            usable = endpoint is not None and endpoint.enabled
            secrets: tuple[str, ...] = ()
            if endpoint is not None and usable:
                secrets = (endpoint.secret,)
                expires = endpoint.previous_secret_expires_at
                if endpoint.previous_secret and expires is not None and expires > now:
                    secrets += (endpoint.previous_secret,)
            prepared.append(
                Outgoing(
                    delivery_id=delivery.id,
                    tenant_id=tenant_id,
                    attempt=delivery.attempts + 1,
                    url=endpoint.url if endpoint is not None and usable else None,
                    secrets=secrets,
                    body=json.dumps(delivery.payload, separators=(",", ":")).encode("utf-8"),
                    event_type=delivery.event_type,
                    event_id=delivery.event_id,
                )
            )
        return prepared


def _resolves_internally(url: str) -> bool:
    """Whether the URL's host resolves to a private, loopback or link-local address
    (refused in production: a tenant must not reach carepost's own network)."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False  # the POST will fail with its own error
    return any(not ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos)


def send(client: httpx.Client, outgoing: Outgoing, *, allow_internal: bool) -> Result:
    """One signed POST; never raises for a network failure (it is the result)."""
    started = time.perf_counter()

    def done(status_code: int | None, error: str | None) -> Result:
        return Result(status_code, error, int((time.perf_counter() - started) * 1000))

    if outgoing.url is None:
        return done(None, "endpoint disabled or deleted")
    if not allow_internal and _resolves_internally(outgoing.url):
        return done(None, "refused: the host resolves to a private address")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        HEADER: signature_header(outgoing.secrets, timestamp, outgoing.body),
        "Carepost-Event": outgoing.event_type,
        "Carepost-Event-Id": str(outgoing.event_id),
        "Carepost-Delivery": str(outgoing.delivery_id),
    }
    try:
        response = client.post(outgoing.url, content=outgoing.body, headers=headers)
    except httpx.TimeoutException:
        return done(None, "timeout")
    except httpx.ConnectError:
        return done(None, "connection failed")
    except httpx.HTTPError as exc:
        return done(None, type(exc).__name__)
    # The body is never read into the log: a receiver's error page may hold anything.
    response.close()
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return done(response.status_code, error)


def _record(
    runtime: Runtime,
    outgoing: Outgoing,
    result: Result,
    *,
    started_at: datetime,
    max_attempts: int,
    rng: random.Random | None,
) -> str:
    with runtime.database.session() as session:
        session.add(
            WebhookAttempt(
                id=new_id(),
                tenant_id=outgoing.tenant_id,
                delivery_id=outgoing.delivery_id,
                attempt=outgoing.attempt,
                started_at=started_at,
                duration_ms=result.duration_ms,
                status_code=result.status_code,
                error=result.error,
                succeeded=result.succeeded,
            )
        )
        now = utcnow()
        values: dict[str, object] = {
            "attempts": outgoing.attempt,
            "lease_until": None,
            "last_status_code": result.status_code,
            "last_error": result.error,
        }
        if result.succeeded:
            state = "delivered"
            values["delivered_at"] = now
        elif outgoing.url is None or outgoing.attempt >= max_attempts:
            state = "failed"
        else:
            state = "pending"
            values["next_attempt_at"] = now + retry_delay(outgoing.attempt, rng)
        values["state"] = state
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == outgoing.delivery_id)
            .values(**values)
        )
        return state


def deliver_due(
    runtime: Runtime,
    *,
    client: httpx.Client | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
    limit: int = BATCH,
    tenant_id: uuid.UUID | None = None,
) -> int:
    """One round: send what is due; returns how many deliveries were attempted."""
    claimed = claim_due(runtime, now=now or utcnow(), limit=limit, tenant_id=tenant_id)
    if not claimed:
        return 0
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for delivery_id, owner in claimed:
        by_tenant[owner].append(delivery_id)
    moment = now or utcnow()
    by_endpoint: dict[str, list[Outgoing]] = defaultdict(list)
    for owner, delivery_ids in by_tenant.items():
        for outgoing in _prepare(runtime, owner, delivery_ids, moment):
            by_endpoint[outgoing.url or ""].append(outgoing)
    settings = runtime.settings
    allow_internal = settings.environment != "production"
    own_client = client is None
    http = client or httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)

    def send_to_endpoint(batch: list[Outgoing]) -> list[tuple[Outgoing, Result, datetime]]:
        # One endpoint's deliveries in order. An endpoint that could not be reached
        # (timeout, refused, no such host) is not tried again this round: its other
        # deliveries share that result, so a dead endpoint costs one timeout per
        # round, not one per queued event, and never holds up the other endpoints.
        sent: list[tuple[Outgoing, Result, datetime]] = []
        unreachable: Result | None = None
        for outgoing in batch:
            started_at = utcnow()
            result = unreachable or send(http, outgoing, allow_internal=allow_internal)
            if result.status_code is None:
                unreachable = result
            sent.append((outgoing, result, started_at))
        return sent

    outcomes: dict[str, int] = defaultdict(int)
    try:
        workers = max(1, min(PARALLEL_ENDPOINTS, len(by_endpoint)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhooks") as pool:
            for sent in pool.map(send_to_endpoint, by_endpoint.values()):
                for outgoing, result, started_at in sent:
                    state = _record(
                        runtime,
                        outgoing,
                        result,
                        started_at=started_at,
                        max_attempts=settings.webhook_max_attempts,
                        rng=rng,
                    )
                    outcomes[state] += 1
    finally:
        if own_client:
            http.close()
    log.info("webhooks.round", count=len(claimed), **outcomes)
    return len(claimed)
