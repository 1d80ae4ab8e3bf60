"""Data key rotation: every PHI value moves to the new key version, with no downtime."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select, update

from carepost.audit.models import AuditEvent
from carepost.contacts.models import Contact
from carepost.core.errors import Conflict, CryptoError, ValidationFailed
from carepost.crypto.models import TenantKey
from carepost.crypto.rotation import destroy_retired_keys, rotate_keys
from tests.canaries import phi_value
from tests.crypto.conftest import (
    assert_reads_back,
    create_tenant,
    raw_values,
    seed,
    version_census,
)


def data_keys(runtime, tenant_id):
    with runtime.database.session() as session:
        rows = session.scalars(
            select(TenantKey)
            .where(TenantKey.tenant_id == tenant_id, TenantKey.kind == "data")
            .order_by(TenantKey.version)
        ).all()
        return [(row.version, row.status, row.retired_at is not None) for row in rows]


def audit_events(runtime, tenant_id, action):
    with runtime.database.session() as session:
        return session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == str(tenant_id), AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).all()


def test_rotation_reencrypts_every_phi_value_under_the_new_version(fresh_runtime):
    tenant, _keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=37, users=2)
    before = raw_values(fresh_runtime, tenant.id)
    assert version_census(fresh_runtime, tenant.id) == {1: 37 * 6 + 2}

    report = rotate_keys(fresh_runtime, batch_size=10)

    after = raw_values(fresh_runtime, tenant.id)
    assert after.keys() == before.keys()
    assert all(after[place] != before[place] for place in before)
    assert version_census(fresh_runtime, tenant.id) == {2: 37 * 6 + 2}
    assert_reads_back(fresh_runtime, tenant.id, seeded)
    assert data_keys(fresh_runtime, tenant.id) == [(1, "retired", True), (2, "active", False)]

    (done,) = report.tenants
    assert (done.tenant_id, done.old_version, done.new_version) == (tenant.id, 1, 2)
    assert done.retired_versions == (1,)
    # Every table with encrypted columns is walked; only the seeded ones have rows.
    assert {name: rows for name, rows in done.rows_by_table.items() if rows} == {
        "contacts": 37,
        "users": 2,
    }
    assert done.rows_reencrypted == report.rows_reencrypted == 39
    assert done.passes == 1 and done.seconds > 0

    (event,) = audit_events(fresh_runtime, tenant.id, "keys.rotate")
    assert event.details["old_version"] == 1 and event.details["new_version"] == 2
    assert event.details["rows_reencrypted"] == 39
    recorded = json.dumps(event.details)
    assert not any(value in recorded for value in seeded.values())


def test_values_written_after_rotation_use_the_new_version(fresh_runtime):
    tenant, _keys = create_tenant(fresh_runtime)
    seed(fresh_runtime, tenant.id, contacts=3)
    rotate_keys(fresh_runtime)
    rotate_keys(fresh_runtime)
    later = seed(fresh_runtime, tenant.id, contacts=2)
    with fresh_runtime.database.session() as session:
        assert fresh_runtime.keyring.load(session, tenant.id).active_version == 3
    assert version_census(fresh_runtime, tenant.id) == {3: 5 * 6}
    assert_reads_back(fresh_runtime, tenant.id, later)
    assert [status for _v, status, _r in data_keys(fresh_runtime, tenant.id)] == [
        "retired",
        "retired",
        "active",
    ]


def test_rotating_one_tenant_leaves_the_others_untouched(fresh_runtime):
    rotated, _ = create_tenant(fresh_runtime)
    other, _ = create_tenant(fresh_runtime)
    seed(fresh_runtime, rotated.id, contacts=4, users=1)
    other_seeded = seed(fresh_runtime, other.id, contacts=4, users=1)
    other_before = raw_values(fresh_runtime, other.id)

    report = rotate_keys(fresh_runtime, tenant_slug=rotated.slug, batch_size=3)

    assert [item.tenant_slug for item in report.tenants] == [rotated.slug]
    assert version_census(fresh_runtime, rotated.id) == {2: 25}
    assert raw_values(fresh_runtime, other.id) == other_before
    assert data_keys(fresh_runtime, other.id) == [(1, "active", False)]
    assert audit_events(fresh_runtime, other.id, "keys.rotate") == []
    assert_reads_back(fresh_runtime, other.id, other_seeded)


def test_keys_loaded_before_a_rotation_keep_working_until_reloaded(fresh_runtime):
    tenant, stale_keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=3)
    rotate_keys(fresh_runtime)

    # A process still holding the old snapshot writes with the old version, which
    # stays readable by everyone until it is destroyed ...
    late_name = phi_value("first")
    with fresh_runtime.bound_session(stale_keys) as session:
        late = Contact(tenant_id=tenant.id, first_name=late_name)
        session.add(late)
    assert version_census(fresh_runtime, tenant.id) == {2: 18, 1: 1}
    with fresh_runtime.tenant_session(tenant.id) as session:
        assert session.get(Contact, late.id).first_name == late_name
    # ... but cannot read values sealed with a version it never loaded: it fails
    # closed, and the next unit of work (which loads keys afresh) reads everything.
    some_id = next(iter(seeded.contacts))
    with fresh_runtime.bound_session(stale_keys) as session, pytest.raises(CryptoError):
        session.execute(select(Contact.first_name).where(Contact.id == some_id)).scalar_one()
    assert_reads_back(fresh_runtime, tenant.id, seeded)


def test_destroying_retired_keys_refuses_while_a_row_still_uses_them(fresh_runtime):
    tenant, stale_keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=3)
    rotate_keys(fresh_runtime)
    with fresh_runtime.bound_session(stale_keys) as session:
        session.add(Contact(tenant_id=tenant.id, last_name=phi_value("last")))

    with pytest.raises(Conflict, match="contacts: 1"):
        destroy_retired_keys(fresh_runtime)
    assert data_keys(fresh_runtime, tenant.id) == [(1, "retired", True), (2, "active", False)]

    rotate_keys(fresh_runtime)
    assert set(version_census(fresh_runtime, tenant.id)) == {3}
    (destroyed,) = destroy_retired_keys(fresh_runtime)
    assert (destroyed.tenant_id, destroyed.versions) == (tenant.id, (1, 2))
    assert data_keys(fresh_runtime, tenant.id) == [(3, "active", False)]
    assert_reads_back(fresh_runtime, tenant.id, seeded)
    (event,) = audit_events(fresh_runtime, tenant.id, "keys.destroy")
    assert event.details["versions"] == [1, 2]
    assert destroy_retired_keys(fresh_runtime) == []


def test_verification_pass_catches_rows_written_with_old_keys_during_rotation(fresh_runtime):
    tenant, stale_keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=30)
    already_passed = sorted(seeded.contacts)[:3]  # ids come in order: the first batch
    late_writes = []

    def write_with_stale_keys(step, count):
        # Runs between batches, outside the rotation's transactions: a writer that
        # loaded its keys before the new version existed rewrites a row the pass
        # has already re-encrypted, and a new row lands too.
        if len(late_writes) < len(already_passed) and step.endswith("contacts"):
            target = already_passed[len(late_writes)]
            name = phi_value("last")
            with fresh_runtime.bound_session(stale_keys) as session:
                session.execute(update(Contact).where(Contact.id == target).values(last_name=name))
                session.add(Contact(tenant_id=tenant.id, first_name=phi_value("first")))
            seeded.contacts[target]["last_name"] = name
            late_writes.append(target)

    report = rotate_keys(fresh_runtime, batch_size=5, progress=write_with_stale_keys)

    assert late_writes == already_passed
    (done,) = report.tenants
    assert done.passes == 2
    assert version_census(fresh_runtime, tenant.id) == {2: 30 * 6 + 3}
    assert_reads_back(fresh_runtime, tenant.id, seeded)


def test_rotation_while_contacts_are_written_loses_nothing(fresh_runtime):
    tenant, _keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=120)
    expected = {contact_id: fields["first_name"] for contact_id, fields in seeded.contacts.items()}
    existing = list(expected)
    stop = threading.Event()
    writes = 0
    wrote = threading.Condition()
    failures: list[BaseException] = []

    def keep_writing():
        nonlocal writes
        turn = 0
        try:
            while not stop.is_set():
                turn += 1
                new_name, changed_name = phi_value("first"), phi_value("first")
                target = existing[turn % len(existing)]
                with fresh_runtime.tenant_session(tenant.id) as session:
                    contact = Contact(tenant_id=tenant.id, first_name=new_name)
                    session.add(contact)
                    session.get(Contact, target).first_name = changed_name
                expected[contact.id] = new_name
                expected[target] = changed_name
                with wrote:
                    writes += 1
                    wrote.notify_all()
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread's assert
            failures.append(exc)
            with wrote:
                wrote.notify_all()

    interleaved: list[bool] = []

    def interleave(_step, _count):
        # Let the writer commit at least once between every two batches.
        with wrote:
            seen = writes
            interleaved.append(wrote.wait_for(lambda: writes > seen or failures, timeout=10))

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        report = rotate_keys(fresh_runtime, batch_size=7, progress=interleave)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not failures, failures
    assert len(interleaved) >= 18 and all(interleaved)  # 120 rows, 7 a batch
    assert report.tenants[0].new_version == 2
    assert set(version_census(fresh_runtime, tenant.id)) == {2}
    with fresh_runtime.tenant_session(tenant.id) as session:
        stored = dict(session.execute(select(Contact.id, Contact.first_name)).all())
    assert stored == expected


def test_rotation_waits_for_units_of_work_that_started_before_it(fresh_runtime):
    tenant, _keys = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=10)
    outcome: list[object] = []
    with fresh_runtime.tenant_session(tenant.id) as session:
        # This unit of work holds keys without the version the rotation adds.
        rotation = threading.Thread(
            target=lambda: outcome.append(rotate_keys(fresh_runtime, batch_size=3))
        )
        rotation.start()
        time.sleep(0.5)
        assert rotation.is_alive()
        names = dict(session.execute(select(Contact.id, Contact.first_name)).all())
        assert names == {cid: fields["first_name"] for cid, fields in seeded.contacts.items()}
    rotation.join(timeout=60)
    assert not rotation.is_alive() and len(outcome) == 1
    assert set(version_census(fresh_runtime, tenant.id)) == {2}


def test_rotation_rejects_an_empty_batch_before_touching_any_key(fresh_runtime):
    tenant, _keys = create_tenant(fresh_runtime)
    with pytest.raises(ValidationFailed):
        rotate_keys(fresh_runtime, batch_size=0)
    assert data_keys(fresh_runtime, tenant.id) == [(1, "active", False)]
