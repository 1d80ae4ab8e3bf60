"""Master-key rotation: every tenant key re-wrapped, and the old master key removable."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.core.errors import ConfigError, Conflict
from carepost.core.runtime import build_runtime
from carepost.crypto import keyprovider
from carepost.crypto.models import TenantKey
from carepost.crypto.rotation import remove_master_key, rotate_keys
from tests.crypto.conftest import assert_reads_back, create_tenant, seed, version_census


def key_file(runtime):
    return json.loads(runtime.settings.master_key_file.read_text())


def wrapping_master_keys(runtime):
    with runtime.database.session() as session:
        return set(session.scalars(select(TenantKey.master_key_id)))


def test_master_key_rotation_rewraps_every_tenant_key(fresh_runtime):
    old_master = fresh_runtime.keyring.provider.active_key_id
    first, _ = create_tenant(fresh_runtime)
    second, _ = create_tenant(fresh_runtime)
    seeded = {
        tenant.id: seed(fresh_runtime, tenant.id, contacts=5, users=1) for tenant in (first, second)
    }

    report = rotate_keys(fresh_runtime, new_master_key=True)

    new_master = report.master_key_id
    assert new_master is not None and new_master != old_master
    document = key_file(fresh_runtime)
    assert document["active"] == new_master and set(document["keys"]) == {old_master, new_master}
    assert fresh_runtime.keyring.provider.active_key_id == new_master
    assert wrapping_master_keys(fresh_runtime) == {new_master}
    assert report.keys_rewrapped == 4  # a data key and an index key per tenant
    assert {item.tenant_id: item.new_version for item in report.tenants} == {
        first.id: 2,
        second.id: 2,
    }

    remove_master_key(fresh_runtime, old_master)
    assert set(key_file(fresh_runtime)["keys"]) == {new_master}
    # A process started now knows only the new master key, and reads everything.
    restarted = build_runtime(fresh_runtime.settings)
    try:
        assert restarted.keyring.provider.key_ids == [new_master]
        for tenant_id, values in seeded.items():
            assert_reads_back(restarted, tenant_id, values)
    finally:
        restarted.close()

    with fresh_runtime.database.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.in_(["keys.rotate", "keys.master_remove"]))
        ).all()
    kinds = sorted((event.chain, event.action, event.details.get("kind", "")) for event in events)
    assert kinds == sorted(
        [
            ("system", "keys.rotate", "master_key"),
            ("system", "keys.master_remove", ""),
            (str(first.id), "keys.rotate", "master_key"),
            (str(first.id), "keys.rotate", "data_key"),
            (str(second.id), "keys.rotate", "master_key"),
            (str(second.id), "keys.rotate", "data_key"),
        ]
    )


def test_master_key_rotation_for_one_tenant_rewraps_all_and_reencrypts_one(fresh_runtime):
    named, _ = create_tenant(fresh_runtime)
    other, _ = create_tenant(fresh_runtime)
    seed(fresh_runtime, named.id, contacts=2)
    seed(fresh_runtime, other.id, contacts=2)

    report = rotate_keys(fresh_runtime, tenant_slug=named.slug, new_master_key=True)

    assert wrapping_master_keys(fresh_runtime) == {report.master_key_id}
    assert [item.tenant_id for item in report.tenants] == [named.id]
    assert version_census(fresh_runtime, named.id) == {2: 12}
    assert version_census(fresh_runtime, other.id) == {1: 12}


def test_old_master_key_cannot_be_removed_while_it_still_wraps_a_key(fresh_runtime):
    old_master = fresh_runtime.keyring.provider.active_key_id
    create_tenant(fresh_runtime)
    new_master = keyprovider.add_master_key(fresh_runtime.settings.master_key_file)

    with pytest.raises(Conflict, match="still wraps 2 tenant keys"):
        remove_master_key(fresh_runtime, old_master)
    with pytest.raises(ConfigError, match="active"):
        remove_master_key(fresh_runtime, new_master)
    assert set(key_file(fresh_runtime)["keys"]) == {old_master, new_master}


def test_a_running_process_learns_a_master_key_added_by_another(fresh_runtime):
    tenant, _ = create_tenant(fresh_runtime)
    seeded = seed(fresh_runtime, tenant.id, contacts=3)
    # Another process, started before the rotation, with the old key file in memory.
    other_process = build_runtime(fresh_runtime.settings)
    try:
        report = rotate_keys(fresh_runtime, new_master_key=True)
        assert_reads_back(other_process, tenant.id, seeded)
        late, _ = create_tenant(other_process)
        with other_process.database.session() as session:
            wrapped_under = set(
                session.scalars(
                    select(TenantKey.master_key_id).where(TenantKey.tenant_id == late.id)
                )
            )
        assert wrapped_under == {report.master_key_id}
    finally:
        other_process.close()


def test_a_master_key_from_the_environment_is_not_rotated(fresh_runtime):
    create_tenant(fresh_runtime)
    environment_key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    from_environment = replace(
        fresh_runtime,
        settings=fresh_runtime.settings.model_copy(update={"master_key": environment_key}),
    )
    before = fresh_runtime.settings.master_key_file.read_bytes()
    with pytest.raises(ConfigError, match="CAREPOST_MASTER_KEY"):
        rotate_keys(from_environment, new_master_key=True)
    assert fresh_runtime.settings.master_key_file.read_bytes() == before
