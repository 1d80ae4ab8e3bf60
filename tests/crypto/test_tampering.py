"""A stored ciphertext that was altered or moved fails closed with CryptoError on read."""

from __future__ import annotations

import pytest
from sqlalchemy import LargeBinary, literal, select, type_coerce, update

from carepost.contacts.models import Contact
from carepost.core.errors import CryptoError
from carepost.crypto.keyring import HEADER, NONCE_BYTES
from tests.canaries import phi_value

contacts = Contact.__table__


def add_contact(runtime, tenant_id, **fields):
    with runtime.tenant_session(tenant_id) as session:
        contact = Contact(tenant_id=tenant_id, **fields)
        session.add(contact)
    return contact.id


def read_raw(runtime, contact_id, column):
    with runtime.database.session() as session:
        blob = session.scalar(
            select(type_coerce(contacts.c[column], LargeBinary)).where(contacts.c.id == contact_id)
        )
    return bytes(blob)


def write_raw(runtime, contact_id, column, blob):
    with runtime.database.session() as session:
        session.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values({column: literal(blob, LargeBinary)})
        )


def read_column(runtime, tenant_id, contact_id, column):
    with runtime.tenant_session(tenant_id) as session:
        return session.scalar(select(getattr(Contact, column)).where(Contact.id == contact_id))


def flip(blob, position):
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1 :]


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda blob: flip(blob, len(blob) - 1), id="tag"),
        pytest.param(lambda blob: flip(blob, HEADER.size + NONCE_BYTES), id="ciphertext"),
        pytest.param(lambda blob: flip(blob, HEADER.size), id="nonce"),
        pytest.param(lambda blob: flip(blob, HEADER.size - 1), id="key-version"),
        pytest.param(lambda blob: flip(blob, 0), id="format"),
        pytest.param(lambda blob: blob[:-1], id="truncated"),
        pytest.param(lambda blob: blob[: HEADER.size + NONCE_BYTES], id="cut-to-header"),
    ],
)
def test_altered_ciphertext_fails_closed(runtime, tenant, alter):
    tenant_row, _keys = tenant
    contact_id = add_contact(runtime, tenant_row.id, first_name=phi_value("first"))
    write_raw(runtime, contact_id, "first_name", alter(read_raw(runtime, contact_id, "first_name")))
    with pytest.raises(CryptoError):
        read_column(runtime, tenant_row.id, contact_id, "first_name")


def test_ciphertext_moved_to_another_column_fails_closed(runtime, tenant):
    tenant_row, _keys = tenant
    contact_id = add_contact(
        runtime, tenant_row.id, first_name=phi_value("first"), last_name=phi_value("last")
    )
    write_raw(runtime, contact_id, "last_name", read_raw(runtime, contact_id, "first_name"))
    with pytest.raises(CryptoError):
        read_column(runtime, tenant_row.id, contact_id, "last_name")


def test_ciphertext_moved_to_another_tenants_row_fails_closed(runtime, make_tenant):
    tenant_a, _ = make_tenant()
    tenant_b, _ = make_tenant()
    from_a = add_contact(runtime, tenant_a.id, first_name=phi_value("first"))
    into_b = add_contact(runtime, tenant_b.id, first_name=phi_value("first"))
    write_raw(runtime, into_b, "first_name", read_raw(runtime, from_a, "first_name"))
    with pytest.raises(CryptoError):
        read_column(runtime, tenant_b.id, into_b, "first_name")


def test_crypto_errors_name_the_column_never_the_value(runtime, tenant):
    tenant_row, _keys = tenant
    name = phi_value("first")
    contact_id = add_contact(runtime, tenant_row.id, first_name=name)
    write_raw(
        runtime, contact_id, "first_name", flip(read_raw(runtime, contact_id, "first_name"), 20)
    )
    with pytest.raises(CryptoError) as raised:
        read_column(runtime, tenant_row.id, contact_id, "first_name")
    assert "contacts.first_name" in str(raised.value)
    assert name not in str(raised.value)
