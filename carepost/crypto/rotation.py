"""Key rotation without downtime: new data key versions, re-encryption, re-wrapping.

Rotating one tenant's data key (:func:`rotate_keys`):

1. A new data key version is committed. Every unit of work that starts from then
   on loads it (``Keyring.load`` writes with the highest active version).
2. On PostgreSQL, the rotation waits for units of work that started *before*
   that commit to end: they hold keys without the new version and must not meet
   a row re-encrypted under it. (On SQLite every transaction takes the write
   lock, so none can be in flight while the version is committed.)
3. Every encrypted column of every table (found by type, see
   :func:`encrypted_tables`) is re-encrypted in id order, ``batch_size`` rows per
   short transaction. Rows are locked one batch at a time (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL; SQLite's write lock): no table lock, writers never
   wait for more than one batch, and a concurrent update is never overwritten.
4. A verification pass counts rows still sealed with an older version (a writer
   holding old keys, a row skipped because it was locked) and goes over them
   again, a bounded number of times.
5. In the transaction whose count is zero, the old versions are marked
   ``retired`` (still readable) and the rotation is written to the tenant's
   audit chain. :func:`destroy_retired_keys` later deletes retired versions
   for good, refusing while any row still uses one.

A master-key rotation adds a key to the key file and re-wraps every tenant's
keys under it; :func:`remove_master_key` drops the old one once nothing uses it.
The design and its limits are written up in docs/encryption.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import LargeBinary, bindparam, func, or_, select, text, type_coerce, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.errors import ConfigError, Conflict, CryptoError, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto import keyprovider
from carepost.crypto.keyring import TenantKeys, sealed_version
from carepost.crypto.models import TenantKey
from carepost.crypto.usage import (
    EncryptedTable,
    count_rows_before,
    count_rows_sealed_with,
    encrypted_tables,
    sealed_before,
)
from carepost.tenancy import service as tenancy

Progress = Callable[[str, int], None]

# How many times the verification pass may send the rotation back over stragglers.
MAX_PASSES = 20
# How long to wait for units of work older than a new key version (PostgreSQL).
DRAIN_TIMEOUT_SECONDS = 60.0
DRAIN_POLL_SECONDS = 0.05

log = get_logger(__name__)


@dataclass(frozen=True)
class TenantRotation:
    """What a rotation did for one tenant. Versions and counts only, never values."""

    tenant_id: uuid.UUID
    tenant_slug: str
    old_version: int
    new_version: int
    retired_versions: tuple[int, ...]
    rows_reencrypted: int
    rows_by_table: dict[str, int]
    keys_rewrapped: int
    passes: int
    seconds: float


@dataclass
class RotationReport:
    """The outcome of :func:`rotate_keys`, per tenant."""

    master_key_id: str | None = None
    tenants: list[TenantRotation] = field(default_factory=list)
    keys_rewrapped: int = 0

    @property
    def rows_reencrypted(self) -> int:
        return sum(item.rows_reencrypted for item in self.tenants)


@dataclass(frozen=True)
class DestroyedKeys:
    tenant_id: uuid.UUID
    tenant_slug: str
    versions: tuple[int, ...]


@dataclass(frozen=True)
class _TenantRef:
    id: uuid.UUID
    slug: str


def _reseal(
    keys: TenantKeys, label: str, blob: bytes | None, version: int, where: str
) -> bytes | None:
    if blob is None:
        return None
    blob = bytes(blob)
    if sealed_version(blob) >= version:
        return blob
    try:
        return keys.encrypt(label, keys.decrypt(label, blob), version=version)
    except CryptoError as exc:
        raise CryptoError(f"{exc.detail} ({where}); rotation stopped") from None


def _resealed_row(
    keys: TenantKeys, target: EncryptedTable, row: Row[Any], version: int
) -> dict[str, Any]:
    """The UPDATE parameters for one row: every value sealed with ``version``."""
    where = f"table {target.name}, row {row.id}"
    parameters: dict[str, Any] = {"row_id": row.id}
    for column, label in zip(target.columns, target.labels, strict=True):
        parameters[f"new_{column.name}"] = _reseal(
            keys, label, row._mapping[column.name], version, where
        )
    return parameters


def _reencrypt_table(
    runtime: Runtime,
    keys: TenantKeys,
    target: EncryptedTable,
    version: int,
    batch_size: int,
    report_progress: Callable[[int], None],
) -> int:
    """Re-encrypt one table's stale values for one tenant; returns rows rewritten."""
    table = target.table
    raw_values = [type_coerce(column, LargeBinary).label(column.name) for column in target.columns]
    stale = or_(*[sealed_before(column, version) for column in target.columns])
    rewrite = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({c.name: bindparam(f"new_{c.name}", type_=LargeBinary) for c in target.columns})
    )
    rewritten = 0
    last_id: Any = None
    while True:
        with runtime.database.session() as session:
            query = select(table.c.id, *raw_values).where(
                table.c.tenant_id == keys.tenant_id, stale
            )
            if last_id is not None:
                query = query.where(table.c.id > last_id)
            # SKIP LOCKED: a row a writer holds is left for the verification pass
            # rather than making the rotation (and every writer behind it) wait.
            query = query.order_by(table.c.id).limit(batch_size).with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            if not rows:
                break
            last_id = rows[-1].id
            parameters = [_resealed_row(keys, target, row, version) for row in rows]
            session.connection().execute(rewrite, parameters)
        rewritten += len(rows)
        report_progress(rewritten)
        if len(rows) < batch_size:
            break
    return rewritten


def _wait_for_older_units_of_work(runtime: Runtime, tenant_id: uuid.UUID) -> None:
    """Wait until every transaction that began before now has ended (PostgreSQL).

    A unit of work loads its tenant's keys when it starts; one that started before
    the new version was committed cannot read values sealed with it. Waiting for
    those to finish before re-encrypting anything means none of them meets one.
    SQLite needs no wait: each transaction holds the database's write lock, so the
    commit of the new version could not happen while another unit of work ran.
    """
    if runtime.database.is_sqlite:
        return
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    older = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend' AND xact_start < :since"
    )
    with runtime.database.engine.connect() as connection:
        since = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        connection.rollback()
        while True:
            # pg_stat_activity is a snapshot per transaction: end it to look again.
            waiting = connection.execute(older, {"since": since}).scalar_one()
            connection.rollback()
            if not waiting:
                return
            if time.monotonic() > deadline:
                log.warning("keys.rotate.drain_timeout", tenant_id=str(tenant_id), count=waiting)
                return
            time.sleep(DRAIN_POLL_SECONDS)


def _newest_data_version(session: Session, tenant_id: uuid.UUID) -> int:
    newest = session.scalar(
        select(func.max(TenantKey.version)).where(
            TenantKey.tenant_id == tenant_id, TenantKey.kind == "data"
        )
    )
    return int(newest or 0)


def _rotate_tenant_data_key(
    runtime: Runtime,
    tenant: _TenantRef,
    tables: list[EncryptedTable],
    *,
    batch_size: int,
    progress: Progress | None,
    actor: audit.Actor,
    keys_rewrapped: int,
) -> TenantRotation:
    started = time.monotonic()
    keyring = runtime.keyring
    with runtime.database.session() as session:
        old_version = keyring.load(session, tenant.id).active_version
        new_version = keyring.add_data_key_version(session, tenant.id, retire_previous=False)
    _wait_for_older_units_of_work(runtime, tenant.id)
    with runtime.database.session() as session:
        keys = keyring.load(session, tenant.id)

    rows_by_table = {target.name: 0 for target in tables}
    passes = 0
    retired: list[int] | None = None
    while retired is None:
        passes += 1
        for target in tables:
            done_before = rows_by_table[target.name]
            step = f"{tenant.slug}: {target.name}"

            def report_progress(count: int, step: str = step, base: int = done_before) -> None:
                if progress is not None:
                    progress(step, base + count)

            rows_by_table[target.name] += _reencrypt_table(
                runtime, keys, target, new_version, batch_size, report_progress
            )
        # Counting and retiring in one transaction: on SQLite nothing can slip in
        # between; on PostgreSQL a late writer is caught by destroy_retired_keys.
        with runtime.database.session() as session:
            if _newest_data_version(session, tenant.id) != new_version:
                raise Conflict(
                    f"another key rotation of {tenant.slug} started meanwhile; let it finish"
                )
            stragglers = sum(count_rows_before(session, tenant.id, new_version, tables).values())
            if not stragglers:
                retired = keyring.retire_data_keys(session, tenant.id, below=new_version)
                audit.record(
                    session,
                    tenant_id=tenant.id,
                    actor=actor,
                    action="keys.rotate",
                    object_type="tenant",
                    object_id=tenant.id,
                    details={
                        "kind": "data_key",
                        "old_version": old_version,
                        "new_version": new_version,
                        "retired_versions": retired,
                        "rows_reencrypted": sum(rows_by_table.values()),
                        "rows_by_table": rows_by_table,
                        "passes": passes,
                    },
                )
        if retired is None:
            if passes >= MAX_PASSES:
                raise Conflict(
                    f"key rotation of {tenant.slug} did not converge: {stragglers} rows "
                    "still use an old key version; run it again"
                )
            log.info("keys.rotate.stragglers", tenant_id=str(tenant.id), count=stragglers)
    seconds = time.monotonic() - started
    rows_total = sum(rows_by_table.values())
    log.info(
        "keys.rotate.done",
        tenant_id=str(tenant.id),
        old_version=old_version,
        new_version=new_version,
        count=rows_total,
        passes=passes,
        seconds=round(seconds, 3),
    )
    return TenantRotation(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        old_version=old_version,
        new_version=new_version,
        retired_versions=tuple(retired),
        rows_reencrypted=rows_total,
        rows_by_table=rows_by_table,
        keys_rewrapped=keys_rewrapped,
        passes=passes,
        seconds=seconds,
    )


def _tenants(runtime: Runtime, tenant_slug: str | None) -> list[_TenantRef]:
    with runtime.database.session() as session:
        if tenant_slug is not None:
            found = [tenancy.get_tenant_by_slug(session, tenant_slug)]
        else:
            found = tenancy.list_tenants(session)
        return [_TenantRef(tenant.id, tenant.slug) for tenant in found]


def _require_key_file(runtime: Runtime) -> None:
    if runtime.settings.master_key is not None:
        raise ConfigError(
            "the master key comes from CAREPOST_MASTER_KEY, which holds a single key; "
            "move it to a key file (master_key_file) to rotate it"
        )


def _rewrap_tenant(runtime: Runtime, tenant: _TenantRef, actor: audit.Actor) -> int:
    with runtime.database.session() as session:
        moved = runtime.keyring.rewrap_all(session, tenant.id)
        if moved:
            audit.record(
                session,
                tenant_id=tenant.id,
                actor=actor,
                action="keys.rotate",
                object_type="tenant",
                object_id=tenant.id,
                details={
                    "kind": "master_key",
                    "master_key_id": runtime.keyring.provider.active_key_id,
                    "keys_rewrapped": moved,
                },
            )
    return moved


def rotate_keys(
    runtime: Runtime,
    *,
    tenant_slug: str | None = None,
    new_master_key: bool = False,
    batch_size: int = 500,
    progress: Callable[[str, int], None] | None = None,
    actor: audit.Actor = audit.SYSTEM,
) -> RotationReport:
    """Rotate data keys (every tenant, or the one named), optionally the master key first.

    With ``new_master_key`` a new active master key is added to the key file and
    the keys of *every* tenant are re-wrapped under it (the master key is shared),
    whatever ``tenant_slug`` says. Keys of the tenants in scope that are still
    wrapped under an older master key are re-wrapped in any case.

    ``progress(step, count)`` is called after each committed batch, outside any
    transaction, with a step name (tenant slug and table) and the rows of that
    table re-encrypted so far.
    """
    if batch_size < 1:
        raise ValidationFailed("must be at least 1", field="batch_size")
    report = RotationReport()
    tables = encrypted_tables()
    in_scope = _tenants(runtime, tenant_slug)
    rewrapped: dict[uuid.UUID, int] = {}

    if new_master_key:
        _require_key_file(runtime)
        report.master_key_id = keyprovider.add_master_key(runtime.settings.master_key_file)
        runtime.keyring.use_provider(keyprovider.load_key_provider(runtime.settings))
        everyone = in_scope if tenant_slug is None else _tenants(runtime, None)
        for tenant in everyone:
            rewrapped[tenant.id] = _rewrap_tenant(runtime, tenant, actor)
            if progress is not None:
                progress(f"{tenant.slug}: keys re-wrapped", rewrapped[tenant.id])
        with runtime.database.session() as session:
            audit.record(
                session,
                tenant_id=None,
                actor=actor,
                action="keys.rotate",
                object_type="master_key",
                object_id=report.master_key_id,
                details={
                    "kind": "master_key",
                    "tenants": len(everyone),
                    "keys_rewrapped": sum(rewrapped.values()),
                },
            )
    else:
        for tenant in in_scope:
            rewrapped[tenant.id] = _rewrap_tenant(runtime, tenant, actor)
    report.keys_rewrapped = sum(rewrapped.values())

    for tenant in in_scope:
        report.tenants.append(
            _rotate_tenant_data_key(
                runtime,
                tenant,
                tables,
                batch_size=batch_size,
                progress=progress,
                actor=actor,
                keys_rewrapped=rewrapped.get(tenant.id, 0),
            )
        )
    return report


def _retired_versions(session: Session, tenant_id: uuid.UUID) -> list[int]:
    return sorted(
        session.scalars(
            select(TenantKey.version).where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.kind == "data",
                TenantKey.status == "retired",
            )
        )
    )


def _refuse_if_in_use(
    session: Session, tenant: _TenantRef, versions: list[int], tables: list[EncryptedTable]
) -> None:
    in_use = count_rows_sealed_with(session, tenant.id, versions, tables)
    if in_use:
        where = ", ".join(f"{name}: {count}" for name, count in sorted(in_use.items()))
        raise Conflict(
            f"retired key versions of {tenant.slug} still seal rows ({where}); "
            "run the key rotation again before destroying them"
        )


def destroy_retired_keys(
    runtime: Runtime,
    *,
    tenant_slug: str | None = None,
    actor: audit.Actor = audit.SYSTEM,
) -> list[DestroyedKeys]:
    """Delete retired data key versions (crypto-shredding), every tenant or the one named.

    Refuses, destroying nothing, if any row of a tenant in scope still holds a value
    sealed with a retired version. Each destruction is audited as ``keys.destroy``.
    """
    tables = encrypted_tables()
    plan: list[tuple[_TenantRef, list[int]]] = []
    for tenant in _tenants(runtime, tenant_slug):
        with runtime.database.session() as session:
            versions = _retired_versions(session, tenant.id)
            if versions:
                _refuse_if_in_use(session, tenant, versions, tables)
                plan.append((tenant, versions))
    destroyed: list[DestroyedKeys] = []
    for tenant, versions in plan:
        with runtime.database.session() as session:
            # Checked again in the deleting transaction: a row may have arrived since.
            _refuse_if_in_use(session, tenant, versions, tables)
            gone = runtime.keyring.destroy_data_keys(session, tenant.id, versions)
            audit.record(
                session,
                tenant_id=tenant.id,
                actor=actor,
                action="keys.destroy",
                object_type="tenant",
                object_id=tenant.id,
                details={"kind": "data_key", "versions": gone},
            )
        destroyed.append(DestroyedKeys(tenant.id, tenant.slug, tuple(gone)))
    return destroyed


def remove_master_key(
    runtime: Runtime, master_key_id: str, *, actor: audit.Actor = audit.SYSTEM
) -> None:
    """Drop an old master key from the key file, refusing while any tenant key uses it."""
    _require_key_file(runtime)
    with runtime.database.session() as session:
        still_wrapped = session.scalar(
            select(func.count())
            .select_from(TenantKey)
            .where(TenantKey.master_key_id == master_key_id)
        )
    if still_wrapped:
        raise Conflict(
            f"master key {master_key_id!r} still wraps {still_wrapped} tenant keys; "
            "run the key rotation with a new master key first"
        )
    keyprovider.remove_master_key(runtime.settings.master_key_file, master_key_id)
    runtime.keyring.use_provider(keyprovider.load_key_provider(runtime.settings))
    with runtime.database.session() as session:
        audit.record(
            session,
            tenant_id=None,
            actor=actor,
            action="keys.master_remove",
            object_type="master_key",
            object_id=master_key_id,
        )
