"""Verification names every kind of tampering precisely, and passes intact chains."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from carepost.audit import service as audit
from carepost.audit.models import AuditEvent
from carepost.audit.verify import ChainHead, ProblemKind, verify_chains
from carepost.core.database import new_id, utcnow
from tests.audit.tampering import Tamper, append


@pytest.fixture
def trail(session, tenant):
    """A tenant chain of 10 events (seq 1 is tenant.create), open for tampering."""
    tenant_row, _keys = tenant
    append(session, tenant_row.id, 9)
    chain = audit.chain_for(tenant_row.id)
    return chain, Tamper(session, chain)


def only_problem(report):
    assert not report.ok
    assert len(report.problems) == 1, report.describe()
    return report.problems[0]


def test_intact_chain_verifies_ok(session, trail):
    chain, tamper = trail
    report = verify_chains(session, chain=chain)
    assert report.ok, report.describe()
    assert report.chains_checked == 1
    assert report.events_checked == 10
    head = report.heads[chain]
    assert head.seq == 10
    assert head.hash == session.get(AuditEvent, uuid.UUID(tamper.event_id(10))).hash


def test_verifying_every_chain_covers_the_system_chain_and_this_trail(session, trail):
    chain, _tamper = trail
    report = verify_chains(session)
    # Other tests deliberately damage chains of their own tenants; these two are intact.
    mine = [p for p in report.problems if p.chain in (chain, audit.SYSTEM_CHAIN)]
    assert not mine, [p.describe() for p in mine]
    assert report.chains_checked >= 2
    assert {audit.SYSTEM_CHAIN, chain} <= set(report.heads)


def test_an_empty_chain_verifies_ok(session):
    chain = str(uuid.uuid4())
    audit.ensure_chain(session, chain)
    report = verify_chains(session, chain=chain)
    assert report.ok
    assert report.heads[chain] == ChainHead(chain, 0, audit.GENESIS_HASH)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "nothing to see here"),
        ("actor_id", "u-mallory"),
        ("action", "contact.update"),
        ("outcome", "failure"),
        ("object_id", "c-999"),
        ("details", '{"fields": ["last_name"]}'),
        ("tenant_id", uuid.UUID(int=7)),
    ],
)
def test_an_edited_field_is_named(session, trail, column, value):
    chain, tamper = trail
    event_id = tamper.event_id(5)
    tamper.set(5, column, value)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.chain, problem.seq, problem.event_id) == (chain, 5, event_id)
    assert problem.kind is ProblemKind.CONTENT_EDITED
    assert problem.describe() == (
        f"chain {chain} seq 5 (event {event_id}): content edited after it was written"
    )


def test_an_edited_timestamp_is_named(session, trail):
    chain, tamper = trail
    tamper.set(4, "occurred_at", utcnow() - timedelta(days=30))
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (4, ProblemKind.CONTENT_EDITED)


def test_an_edited_last_event_is_named(session, trail):
    chain, tamper = trail
    tamper.set(10, "reason", "edited")
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (10, ProblemKind.CONTENT_EDITED)


def test_a_deleted_middle_event_is_named(session, trail):
    chain, tamper = trail
    follower = tamper.event_id(7)
    tamper.delete(6)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.chain, problem.seq, problem.event_id) == (chain, 6, None)
    assert problem.kind is ProblemKind.MISSING
    assert problem.describe().startswith(
        f"chain {chain} seq 6: seq 6 missing (deleted); the next event, seq 7 (event {follower})"
    )


def test_several_deleted_events_are_named_as_a_range(session, trail):
    chain, tamper = trail
    for seq in (3, 4, 5):
        tamper.delete(seq)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (3, ProblemKind.MISSING)
    assert "seqs 3-5 missing" in problem.message


def test_a_deleted_first_event_is_named(session, trail):
    chain, tamper = trail
    tamper.delete(1)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (1, ProblemKind.MISSING)


def test_a_deleted_last_event_is_a_truncated_tail(session, trail):
    chain, tamper = trail
    tamper.delete(10)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.chain, problem.seq, problem.event_id) == (chain, 10, None)
    assert problem.kind is ProblemKind.TRUNCATED
    assert "the head records seq 10 but the chain ends at seq 9" in problem.describe()


def test_swapped_events_are_named_as_reordered(session, trail):
    chain, tamper = trail
    fourth, sixth = tamper.event_id(4), tamper.event_id(6)
    tamper.swap(4, 6)
    report = verify_chains(session, chain=chain)
    assert [(p.seq, p.event_id, p.kind) for p in report.problems] == [
        (4, sixth, ProblemKind.REORDERED),
        (6, fourth, ProblemKind.REORDERED),
    ]
    assert report.problems[0].describe() == (
        f"chain {chain} seq 4 (event {sixth}): written as seq 6, now stored as seq 4: "
        "events reordered or renumbered"
    )


def test_swapped_neighbours_are_named_as_reordered(session, trail):
    chain, tamper = trail
    tamper.swap(9, 10)
    report = verify_chains(session, chain=chain)
    assert [(p.seq, p.kind) for p in report.problems] == [
        (9, ProblemKind.REORDERED),
        (10, ProblemKind.REORDERED),
    ]


def test_a_changed_prev_hash_is_named(session, trail):
    chain, tamper = trail
    event_id = tamper.event_id(8)
    tamper.set(8, "prev_hash", "f" * 64)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.event_id) == (8, event_id)
    assert problem.kind is ProblemKind.PREV_HASH_ALTERED
    assert "prev_hash changed after it was written" in problem.describe()


def test_a_changed_stored_hash_is_named(session, trail):
    chain, tamper = trail
    tamper.set(3, "hash", "e" * 64)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (3, ProblemKind.HASH_ALTERED)


def test_a_changed_stored_hash_of_the_last_event_is_named(session, trail):
    chain, tamper = trail
    tamper.set(10, "hash", "e" * 64)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (10, ProblemKind.HASH_ALTERED)


def test_an_event_rewritten_with_a_fresh_hash_breaks_the_next_link(session, trail):
    """The hash chain needs no secret: a rewrite recomputes the hash, the link still breaks."""
    chain, tamper = trail
    session.expire_all()
    event = session.get(AuditEvent, uuid.UUID(tamper.event_id(5)))
    event.reason = "rewritten"
    event.hash = audit.event_hash(event)
    session.flush()
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (6, ProblemKind.LINK_BROKEN)
    assert f"does not match the hash of seq 5 (event {event.id})" in problem.message


def test_a_forged_head_hash_is_named(session, trail):
    chain, tamper = trail
    tamper.set_head(last_hash="a" * 64)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.event_id) == (10, tamper.event_id(10))
    assert problem.kind is ProblemKind.HEAD_FORGED


def test_a_head_rolled_back_is_named(session, trail):
    chain, tamper = trail
    tamper.set_head(seq=8)
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (9, ProblemKind.BEYOND_HEAD)


def test_an_event_slipped_in_after_the_head_is_named(session, trail):
    chain, tamper = trail
    last = session.get(AuditEvent, uuid.UUID(tamper.event_id(10)))
    forged = AuditEvent(
        id=new_id(),
        chain=chain,
        seq=11,
        tenant_id=last.tenant_id,
        occurred_at=utcnow(),
        actor_type="user",
        actor_id="u-mallory",
        actor_label="",
        action="contact.view",
        outcome="success",
        object_type="contact",
        object_id="c-1",
        client_address="",
        reason="",
        details={},
        prev_hash=last.hash,
    )
    forged.hash = audit.event_hash(forged)
    session.add(forged)
    session.flush()
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.seq, problem.kind) == (11, ProblemKind.BEYOND_HEAD)


def test_a_deleted_head_is_named(session, trail):
    chain, tamper = trail
    tamper.delete_head()
    problem = only_problem(verify_chains(session, chain=chain))
    assert (problem.chain, problem.kind) == (chain, ProblemKind.HEAD_MISSING)


def test_an_anchor_catches_a_consistent_rewrite_of_the_tail(session, trail):
    """Deleting the tail and moving the head back is consistent; the anchored head is not."""
    chain, tamper = trail
    anchor = verify_chains(session, chain=chain).heads[chain]
    tamper.delete(10)
    tamper.set_head(seq=9, last_hash=session.get(AuditEvent, uuid.UUID(tamper.event_id(9))).hash)
    assert verify_chains(session, chain=chain).ok
    problem = only_problem(verify_chains(session, chain=chain, anchors={chain: anchor}))
    assert (problem.seq, problem.kind) == (10, ProblemKind.ANCHOR_MISMATCH)


def test_an_anchor_catches_a_rewritten_anchored_event(session, trail):
    chain, tamper = trail
    anchor = verify_chains(session, chain=chain).heads[chain]
    tamper.set(10, "hash", "b" * 64)
    tamper.set_head(last_hash="b" * 64)
    report = verify_chains(session, chain=chain, anchors={chain: anchor})
    assert ProblemKind.ANCHOR_MISMATCH in {p.kind for p in report.problems}


@pytest.fixture
def other_tenant(make_tenant):
    # Created before the test's session takes SQLite's write lock.
    tenant_row, _keys = make_tenant("Other Clinic")
    return tenant_row


def test_verification_of_one_chain_ignores_tampering_elsewhere(other_tenant, session, trail):
    _chain, tamper = trail
    tamper.set(5, "reason", "edited")
    assert verify_chains(session, chain=audit.chain_for(other_tenant.id)).ok
    assert not verify_chains(session).ok


def test_describe_summarises_and_lists_heads(session, trail):
    chain, tamper = trail
    tamper.set(2, "reason", "edited")
    lines = verify_chains(session, chain=chain).describe()
    assert lines[0].startswith(f"chain {chain} seq 2 (event ")
    assert lines[1] == "1 problem: 10 events in 1 chains checked"
    assert lines[2].startswith(f"chain {chain} head seq 10 hash ")


def test_a_mass_rewrite_reports_a_bounded_number_of_problems(session, trail):
    chain, tamper = trail
    for seq in range(1, 11):
        tamper.set(seq, "reason", "edited")
    report = verify_chains(session, chain=chain, max_problems=4)
    assert len(report.problems) == 4
    assert report.problems_omitted == 6
    assert report.describe(heads=False)[-2] == "... and 6 more problems"


def bulk_chain(session, count: int) -> str:
    """A valid chain of ``count`` events, inserted in bulk for size tests."""
    chain = str(uuid.uuid4())
    audit.ensure_chain(session, chain)
    prev_hash, rows, now = audit.GENESIS_HASH, [], utcnow()
    for seq in range(1, count + 1):
        event = AuditEvent(
            id=new_id(),
            chain=chain,
            seq=seq,
            tenant_id=None,
            occurred_at=now,
            actor_type="system",
            actor_id="",
            actor_label="carepost",
            action="bench.append",
            outcome="success",
            object_type="",
            object_id=str(seq),
            client_address="",
            reason="",
            details={"n": seq},
            prev_hash=prev_hash,
        )
        event.hash = prev_hash = audit.event_hash(event)
        rows.append(
            {
                column: getattr(event, column)
                for column in (
                    "id",
                    "chain",
                    "seq",
                    "tenant_id",
                    "occurred_at",
                    "actor_type",
                    "actor_id",
                    "actor_label",
                    "action",
                    "outcome",
                    "object_type",
                    "object_id",
                    "client_address",
                    "reason",
                    "details",
                    "prev_hash",
                    "hash",
                )
            }
        )
    session.execute(insert(AuditEvent), rows)
    Tamper(session, chain).set_head(seq=count, last_hash=prev_hash)
    return chain


def peak_memory_of_verifying(session, chain: str) -> int:
    tracemalloc.start()
    try:
        report = verify_chains(session, chain=chain)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, report.describe()
    return peak


def test_memory_stays_flat_as_the_chain_grows(session):
    small = bulk_chain(session, 4_000)
    large = bulk_chain(session, 20_000)
    small_peak = peak_memory_of_verifying(session, small)
    large_peak = peak_memory_of_verifying(session, large)
    # Five times the events, the same batch-sized footprint (not five times the memory).
    assert large_peak < small_peak * 1.5 + 256 * 1024, (small_peak, large_peak)


def test_events_written_in_bulk_chain_and_read_back_as_recorded_one_by_one(session, tenant):
    """record_many writes its rows by COPY (PostgreSQL) or executemany (SQLite): what
    is stored hashes as written, details included (values JSON lacks, such as ids
    and times, as their text), and the chain goes on from and after them."""
    tenant_row, _keys = tenant
    chain = audit.chain_for(tenant_row.id)
    object_id = uuid.uuid4()
    at = utcnow()
    entries = [
        audit.Entry(
            "message.protection",
            object_type="message",
            object_id=object_id,
            details={"n": n, "at": at, "id": object_id, "nested": {"list": [1, "é"]}},
        )
        for n in range(3)
    ]
    audit.record_many(session, tenant_id=tenant_row.id, actor=audit.SYSTEM, entries=entries)
    append(session, tenant_row.id, 1)  # one by one after them
    audit.record_many(session, tenant_id=tenant_row.id, actor=audit.SYSTEM, entries=entries[:1])

    report = verify_chains(session, chain=chain)
    assert report.ok, report.describe()
    rows = session.scalars(
        select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
    ).all()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    bulk = [r for r in rows if r.action == "message.protection"]
    assert len(bulk) == 4
    assert [r.details["n"] for r in bulk] == [0, 1, 2, 0]
    assert bulk[0].details == {
        "n": 0,
        "at": str(at),
        "id": str(object_id),
        "nested": {"list": [1, "é"]},
    }
    assert {r.object_id for r in bulk} == {str(object_id)}
    assert all(r.tenant_id == tenant_row.id and r.actor_type == "system" for r in bulk)
