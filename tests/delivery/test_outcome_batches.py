"""Delivery outcomes written many at a time: the bulk UPDATE of deliveries, the
per-row deferrals and bounces beside it, rows another worker took over, and the
group commit of the lanes (each lane resumes only once its outcome is committed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from carepost.audit.service import SYSTEM
from carepost.consent.suppression import is_suppressed
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.messages import ports
from carepost.messages.delivery import (
    DeliveryRun,
    OutcomeWriter,
    prepare_envelopes,
    record_results,
)
from carepost.messages.models import Message, MessageEvent, MessageState
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages

LIMITS = SendLimits(max_attachment_bytes=1024 * 1024, base_url="https://testserver")
LIFETIME = timedelta(days=5)


def _queue_and_lease(runtime: Runtime, tenant, count: int, owner: str) -> list[uuid.UUID]:
    """``count`` messages, put in ``sending`` under ``owner``'s lease (as a claim does,
    without claiming other tests' messages from the shared database)."""
    keys = tenant[1]
    requests = [
        (
            MessageIn.model_validate(
                {
                    "from": "care@clinic.example",
                    "to": f"bulk-{uuid.uuid4().hex[:8]}@example.org",
                    "subject": "Hi",
                    "text": "Body",
                }
            ),
            None,
        )
        for _ in range(count)
    ]
    with runtime.bound_session(keys) as session:
        results = send_messages(session, keys, requests, SendContext(SYSTEM, LIMITS))
        ids = [r.id for r in results]
        session.execute(
            update(Message)
            .where(Message.id.in_(ids))
            .values(
                state=MessageState.SENDING,
                lease_owner=owner,
                lease_until=utcnow() + timedelta(minutes=5),
                attempts=1,
            )
        )
    return ids


def _outgoing(runtime: Runtime, tenant, ids: list[uuid.UUID]) -> list[ports.Envelope]:
    with runtime.bound_session(tenant[1]) as session:
        prepared = prepare_envelopes(session, tenant[1], ids, settings=runtime.settings)
    by_id = {next(iter(o.messages.values())).id: o for o in prepared}
    return [by_id[i] for i in ids]


def _report(outgoing, status: str, code: int, text: str) -> ports.DeliveryReport:
    [recipient] = outgoing.envelope.recipients
    enhanced = text.split()[0] if text[:1].isdigit() else None
    outcome = ports.RecipientOutcome(recipient, status, code, enhanced, text)  # type: ignore[arg-type]
    return ports.DeliveryReport((outcome,), "127.0.0.1", False)


def _rows(runtime: Runtime, tenant, ids) -> dict[uuid.UUID, Message]:
    with runtime.bound_session(tenant[1]) as session:
        return {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}


def _event_kinds(runtime: Runtime, message_id: uuid.UUID) -> list[str]:
    with runtime.database.session() as session:
        return list(
            session.scalars(
                select(MessageEvent.kind)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.id)
            )
        )


def test_one_call_records_deliveries_deferrals_bounces_and_skips_rows_taken_over(runtime, tenant):
    ids = _queue_and_lease(runtime, tenant, 5, owner="w1")
    outgoing = _outgoing(runtime, tenant, ids)
    # The last one's lease ran out and another worker took it over meanwhile.
    with runtime.database.session() as session:
        session.execute(update(Message).where(Message.id == ids[4]).values(lease_owner="w2"))
    results = [
        (outgoing[0], _report(outgoing[0], "delivered", 250, "2.0.0 Ok")),
        (outgoing[1], _report(outgoing[1], "delivered", 250, "Ok: queued as 1A2B")),
        (outgoing[2], _report(outgoing[2], "deferred", 451, "4.3.0 Try again later")),
        (outgoing[3], _report(outgoing[3], "bounced", 550, "5.1.1 No such user")),
        (outgoing[4], _report(outgoing[4], "delivered", 250, "2.0.0 Ok")),
    ]
    with runtime.bound_session(tenant[1]) as session:
        counts = record_results(session, tenant[1], results, owner="w1", lifetime=LIFETIME)
    assert counts == {"delivered": 2, "deferred": 1, "bounced": 1, "lost": 1}

    rows = _rows(runtime, tenant, ids)
    states = [rows[i].state for i in ids]
    assert states == ["delivered", "delivered", "deferred", "bounced", "sending"]
    assert rows[ids[0]].state_reason == "250 2.0.0 Ok"
    assert rows[ids[1]].state_reason == "250 Ok: queued as 1A2B"
    for message_id in ids[:4]:
        assert (rows[message_id].lease_owner, rows[message_id].lease_until) == ("", None)
    assert rows[ids[0]].sent_at is not None and rows[ids[2]].sent_at is None
    assert rows[ids[2]].next_attempt_at > utcnow()
    # The row another worker holds keeps its lease and gets no event from us.
    assert rows[ids[4]].lease_owner == "w2"
    assert [_event_kinds(runtime, i)[-1:] for i in ids] == [
        ["delivered"],
        ["delivered"],
        ["deferred"],
        ["bounced"],
        ["queued"],
    ]
    with runtime.bound_session(tenant[1]) as session:
        assert is_suppressed(session, tenant[1], rows[ids[3]].to_address, "transactional")


def test_lanes_resume_only_once_their_outcome_is_committed_and_share_commits(runtime, tenant):
    count = 30
    ids = _queue_and_lease(runtime, tenant, count, owner="w1")
    outgoing = _outgoing(runtime, tenant, ids)
    run = DeliveryRun()
    writer = OutcomeWriter(runtime, {tenant[1].tenant_id: tenant[1]}, owner="w1", run=run)
    seen_committed: list[str] = []

    async def lane(item) -> None:
        await asyncio.sleep(0)
        await writer.record(tenant[1].tenant_id, item, _report(item, "delivered", 250, "Ok"))
        message_id = next(iter(item.messages.values())).id
        # Another connection sees it: the outcome is committed, not merely flushed.
        with runtime.database.session() as session:
            seen_committed.append(
                session.scalar(select(Message.state).where(Message.id == message_id))
            )

    async def all_lanes() -> None:
        await asyncio.gather(*(lane(item) for item in outgoing))

    asyncio.run(all_lanes())
    assert seen_committed == ["delivered"] * count
    assert run.outcomes == {"delivered": count}
    assert 1 <= writer.commits < count  # grouped: fewer transactions than outcomes
    with runtime.database.session() as session:
        delivered = session.scalar(
            select(func.count())
            .select_from(MessageEvent)
            .where(MessageEvent.message_id.in_(ids), MessageEvent.kind == "delivered")
        )
    assert delivered == count


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_a_commit_waits_for_the_lanes_still_in_flight_and_no_longer(runtime, tenant, linger):
    """Ten lanes whose SMTP answers come over 90 ms: with a linger, the first report's
    commit waits for the other nine (one commit), and ends when the last is in, not
    when the linger is over; without one, the first report is written at once."""
    count = 10
    ids = _queue_and_lease(runtime, tenant, count, owner="w1")
    outgoing = _outgoing(runtime, tenant, ids)
    settings = runtime.settings.model_copy(update={"outbox_commit_linger_seconds": linger})
    lingering = Runtime(settings, runtime.database, runtime.keyring)
    run = DeliveryRun()
    writer = OutcomeWriter(lingering, {tenant[1].tenant_id: tenant[1]}, owner="w1", run=run)

    async def lane(n: int, item) -> None:
        with writer.in_flight():
            await asyncio.sleep(0.01 * n)  # the server's answer
        await writer.record(tenant[1].tenant_id, item, _report(item, "delivered", 250, "Ok"))

    async def all_lanes() -> float:
        started = time.monotonic()
        await asyncio.gather(*(lane(n, item) for n, item in enumerate(outgoing)))
        return time.monotonic() - started

    elapsed = asyncio.run(all_lanes())
    assert run.outcomes == {"delivered": count}
    if linger:
        assert writer.commits == 1
        assert elapsed < 0.45
    else:
        assert writer.commits >= 2
