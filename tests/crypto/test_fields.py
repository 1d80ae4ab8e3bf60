"""PHI columns: encrypted on write, decrypted on read, bound to tenant and column."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from carepost.contacts.models import Contact
from carepost.core.errors import CryptoError
from carepost.crypto.keyring import bind_tenant_keys
from tests.canaries import phi_value


def test_phi_column_round_trips_and_is_ciphertext_at_rest(runtime, tenant):
    tenant_row, keys = tenant
    name = phi_value("first")
    with runtime.bound_session(keys) as session:
        contact = Contact(tenant_id=tenant_row.id, first_name=name)
        session.add(contact)
        session.flush()
        contact_id = contact.id
    with runtime.bound_session(keys) as session:
        assert session.get(Contact, contact_id).first_name == name
        raw = session.execute(
            text("SELECT first_name FROM contacts WHERE id = :id"),
            {"id": contact_id.hex if runtime.database.is_sqlite else contact_id},
        ).scalar_one()
    assert name.encode() not in bytes(raw)


def test_reading_another_tenants_row_fails_closed(runtime, make_tenant):
    tenant_a, keys_a = make_tenant()
    _tenant_b, keys_b = make_tenant()
    with runtime.bound_session(keys_a) as session:
        contact = Contact(tenant_id=tenant_a.id, first_name=phi_value("first"))
        session.add(contact)
        session.flush()
        contact_id = contact.id
    with (
        runtime.database.session() as session,
        bind_tenant_keys(keys_b),
        pytest.raises(CryptoError),
    ):
        session.execute(select(Contact.first_name).where(Contact.id == contact_id)).scalar_one()


def test_unit_of_work_encrypts_writes_left_pending_until_commit(runtime, tenant):
    tenant_row, keys = tenant
    first, last = phi_value("first"), phi_value("last")
    with runtime.tenant_session(tenant_row.id) as session:
        created = Contact(tenant_id=tenant_row.id, first_name=first)
        session.add(created)
    with runtime.bound_session(keys) as session:
        session.get(Contact, created.id).last_name = last
    with runtime.tenant_session(tenant_row.id) as session:
        stored = session.get(Contact, created.id)
        assert (stored.first_name, stored.last_name) == (first, last)


def test_failed_phi_write_does_not_echo_the_value(runtime, tenant):
    tenant_row, _keys = tenant
    name = phi_value("first")
    with pytest.raises(Exception) as raised, runtime.database.session() as session:
        session.add(Contact(tenant_id=tenant_row.id, first_name=name))
        session.flush()  # no keys bound: the write must fail, without the value in the error
    assert name not in str(raised.value)
    assert name not in repr(raised.value)


def test_nonces_never_repeat_across_threads_or_a_fork():
    """Nonces are read from the random source a block at a time: no slice is handed
    out twice, whether threads share the keys or a forked child inherits them."""
    import os
    import threading
    import uuid

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from carepost.crypto.keyring import HEADER, NONCE_BLOCK, NONCE_BYTES, TenantKeys

    keys = TenantKeys(uuid.uuid4(), {1: AESGCM.generate_key(bit_length=256)}, 1, os.urandom(32))

    def nonce_of(blob: bytes) -> bytes:
        return blob[HEADER.size : HEADER.size + NONCE_BYTES]

    sealed: list[bytes] = []

    def seal_many() -> None:
        sealed.extend(keys.encrypt("t.x", b"v") for _ in range(NONCE_BLOCK + 7))

    threads = [threading.Thread(target=seal_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    nonces = {nonce_of(blob) for blob in sealed}
    assert len(nonces) == len(sealed) == 4 * (NONCE_BLOCK + 7)
    assert all(keys.decrypt("t.x", blob) == b"v" for blob in sealed[:50])

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child seals once and reports its nonce
        os.write(write, nonce_of(keys.encrypt("t.x", b"v")))
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, NONCE_BYTES)
    assert from_child != nonce_of(keys.encrypt("t.x", b"v"))
    assert from_child not in nonces
