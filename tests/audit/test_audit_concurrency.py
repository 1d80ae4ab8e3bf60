"""Concurrent appenders never fork a chain, and verification never holds them up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from carepost.audit import service as audit
from carepost.audit import verify as verify_module
from carepost.audit.models import AuditEvent
from carepost.audit.verify import reading_connection, verify_chains
from tests.audit.tampering import ALICE


class Rollback(Exception):
    """Raised inside a unit of work to roll it back after it appended."""


def hammer(runtime, tenant_id, *, threads: int, appends: int, rollback_every: int) -> int:
    """Append from ``threads`` threads at once, one transaction per append; some roll back.

    Returns the number of appends that committed; a worker's error fails the test.
    """
    start = threading.Barrier(threads)

    def work(worker: int) -> int:
        start.wait()
        done = 0
        for number in range(appends):
            try:
                with runtime.database.session() as session:
                    audit.record(
                        session,
                        tenant_id=tenant_id,
                        actor=ALICE,
                        action="contact.view",
                        object_type="contact",
                        object_id=f"w{worker}-{number}",
                    )
                    if number % rollback_every == rollback_every - 1:
                        raise Rollback
                done += 1
            except Rollback:
                pass
        return done

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, worker) for worker in range(threads)]
        return sum(future.result(timeout=240) for future in futures)


def assert_chain_intact(runtime, tenant_id, expected_events: int) -> None:
    chain = audit.chain_for(tenant_id)
    with runtime.database.session() as session:
        report = verify_chains(session, chain=chain)
        seqs = list(
            session.scalars(
                select(AuditEvent.seq).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            )
        )
    assert report.ok, report.describe()
    assert seqs == list(range(1, expected_events + 1))  # contiguous, no duplicates
    assert report.heads[chain].seq == expected_events


@pytest.mark.postgres_only
def test_eight_writers_on_one_chain_keep_it_intact(runtime, tenant):
    tenant_row, _keys = tenant
    committed = hammer(runtime, tenant_row.id, threads=8, appends=50, rollback_every=7)
    assert committed == 8 * (50 - 50 // 7)
    assert_chain_intact(runtime, tenant_row.id, 1 + committed)  # + tenant.create


def test_four_writers_on_one_chain_keep_it_intact(runtime, tenant):
    """SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL with the head row lock."""
    tenant_row, _keys = tenant
    committed = hammer(runtime, tenant_row.id, threads=4, appends=25, rollback_every=5)
    assert committed == 4 * 20
    assert_chain_intact(runtime, tenant_row.id, 1 + committed)


def test_writers_on_different_chains_do_not_disturb_each_other(runtime, make_tenant):
    tenants = [make_tenant()[0] for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(hammer, runtime, t.id, threads=2, appends=15, rollback_every=4)
            for t in tenants
        ]
        assert [future.result(timeout=240) for future in futures] == [2 * 12] * 3
    for tenant_row in tenants:
        assert_chain_intact(runtime, tenant_row.id, 1 + 2 * 12)


def test_an_append_committed_during_verification_is_not_a_fault(
    runtime, settings, tenant, monkeypatch
):
    tenant_row, _keys = tenant
    chain = audit.chain_for(tenant_row.id)
    with runtime.database.session() as session:
        for number in range(5):
            audit.record(
                session,
                tenant_id=tenant_row.id,
                actor=ALICE,
                action="contact.view",
                object_id=f"c-{number}",
            )

    original = verify_module._event_rows
    appended = threading.Event()

    def rows_then_append(*args, **kwargs) -> Iterator[object]:
        yield from original(*args, **kwargs)
        if not appended.is_set():
            appended.set()
            # Another process appends between the walk over the events and the head read.
            writer = threading.Thread(target=append_one)
            writer.start()
            writer.join(timeout=60)

    def append_one() -> None:
        with runtime.database.session() as session:
            audit.record(session, tenant_id=tenant_row.id, actor=ALICE, action="contact.view")

    monkeypatch.setattr(verify_module, "_event_rows", rows_then_append)
    with runtime.database.session() as session:
        report = verify_chains(session, chain=chain)
    assert appended.is_set()
    assert report.ok, report.describe()
    # PostgreSQL sees the new head and verifies the event up to it; SQLite reads one
    # snapshot, taken before the append.
    expected = 6 if settings.is_sqlite else 7
    assert (report.heads[chain].seq, report.events_checked) == (expected, expected)
    monkeypatch.undo()
    assert_chain_intact(runtime, tenant_row.id, 7)


def test_reading_the_trail_does_not_hold_up_writers(runtime, tenant):
    tenant_row, _keys = tenant
    finished = threading.Event()

    def write() -> None:
        with runtime.database.session() as session:
            audit.record(session, tenant_id=tenant_row.id, actor=ALICE, action="contact.view")
        finished.set()

    with runtime.database.session() as reader, reading_connection(reader) as connection:
        connection.execute(select(AuditEvent.seq).limit(1)).all()
        writer = threading.Thread(target=write)
        writer.start()
        # On SQLite a reader holding BEGIN IMMEDIATE would keep the writer waiting 30 s.
        assert finished.wait(timeout=10)
    writer.join()
