"""Fixtures for encryption tests: an isolated runtime and PHI-seeding helpers.

Rotating every tenant or the master key changes state the rest of the suite
shares (the key file, every tenant's keys), so those tests get a runtime of their
own: a fresh SQLite file, or a fresh PostgreSQL schema, and a fresh key file.
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import LargeBinary, create_engine, select, text, type_coerce

from carepost.accounts.models import User
from carepost.contacts.models import Contact
from carepost.core import migrations
from carepost.core.config import Settings, load_settings
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys, current_tenant_keys, sealed_version
from carepost.crypto.usage import encrypted_tables
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant
from tests.canaries import PHI_CANARIES, phi_value

CONTACT_PHI_FIELDS = ("first_name", "last_name", "email", "phone", "birth_date", "external_id")


@pytest.fixture
def fresh_runtime(settings: Settings, tmp_path: Path) -> Iterator[Runtime]:
    key_file = tmp_path / "master.key"
    init_key_file(key_file)
    schema = None
    if settings.is_sqlite:
        overrides: dict[str, object] = {"database_url": f"sqlite:///{tmp_path / 'carepost.db'}"}
    else:
        schema = f"{settings.database_schema}_{secrets.token_hex(3)}"
        admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides = {"database_url": settings.database_url, "database_schema": schema}
    isolated = load_settings(
        environment="test", master_key_file=key_file, data_dir=tmp_path, **overrides
    )
    built = build_runtime(isolated)
    migrations.upgrade(built.database.engine)
    yield built
    built.close()
    if schema is not None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def create_tenant(runtime: Runtime, name: str = "Clinic") -> tuple[Tenant, TenantKeys]:
    with runtime.database.session() as session:
        return tenancy.create_tenant(
            session, runtime.keyring, slug=f"t-{uuid.uuid4().hex[:12]}", name=name
        )


@dataclass
class Seeded:
    """What a test seeded: PHI per contact id, and the TOTP secret per user id."""

    contacts: dict[uuid.UUID, dict[str, str]]
    totp_secrets: dict[uuid.UUID, str]

    def values(self) -> list[str]:
        found = [value for fields in self.contacts.values() for value in fields.values()]
        return found + list(self.totp_secrets.values())


def contact_phi() -> dict[str, str]:
    return {
        "first_name": phi_value("first"),
        "last_name": phi_value("last"),
        "email": f"{phi_value('email')}@example.org",
        "phone": phi_value("phone"),
        "birth_date": phi_value("birth"),
        "external_id": phi_value("mrn"),
    }


def seed(runtime: Runtime, tenant_id: uuid.UUID, contacts: int, users: int = 0) -> Seeded:
    """Contacts with every PHI field (blind indexes too) and users with a TOTP secret."""
    seeded = Seeded({}, {})
    with runtime.tenant_session(tenant_id) as session:
        keys = current_tenant_keys()
        for _ in range(contacts):
            fields = contact_phi()
            contact = Contact(
                tenant_id=tenant_id,
                email_index=keys.blind_index("contacts.email", fields["email"]),
                phone_index=keys.blind_index("contacts.phone", fields["phone"]),
                external_id_index=keys.blind_index("contacts.external_id", fields["external_id"]),
                **fields,
            )
            session.add(contact)
            session.flush()
            seeded.contacts[contact.id] = fields
        for number in range(users):
            secret = pyotp.random_base32()
            PHI_CANARIES.add(secret)
            user = User(
                tenant_id=tenant_id,
                email=f"staff{number}-{uuid.uuid4().hex[:8]}@clinic.example",
                name="Staff Member",
                role="admin",
                password_hash="not-a-real-hash",
                totp_secret=secret,
                totp_enabled=True,
            )
            session.add(user)
            session.flush()
            seeded.totp_secrets[user.id] = secret
    return seeded


def assert_reads_back(runtime: Runtime, tenant_id: uuid.UUID, seeded: Seeded) -> None:
    with runtime.tenant_session(tenant_id) as session:
        for contact_id, fields in seeded.contacts.items():
            contact = session.get(Contact, contact_id)
            assert contact is not None
            assert {name: getattr(contact, name) for name in fields} == fields
        for user_id, secret in seeded.totp_secrets.items():
            user = session.get(User, user_id)
            assert user is not None and user.totp_secret == secret


def raw_values(runtime: Runtime, tenant_id: uuid.UUID) -> dict[tuple[str, str, str], bytes]:
    """Every stored ciphertext of a tenant, as bytes, keyed by (table, column, row id)."""
    found: dict[tuple[str, str, str], bytes] = {}
    with runtime.database.session() as session:
        for target in encrypted_tables():
            table = target.table
            columns = [type_coerce(c, LargeBinary).label(c.name) for c in target.columns]
            for row in session.execute(
                select(table.c.id, *columns).where(table.c.tenant_id == tenant_id)
            ):
                for column in target.columns:
                    blob = row._mapping[column.name]
                    if blob is not None:
                        found[(table.name, column.name, str(row.id))] = bytes(blob)
    return found


def version_census(runtime: Runtime, tenant_id: uuid.UUID) -> Counter[int]:
    """How many stored values of a tenant each data key version seals."""
    return Counter(sealed_version(blob) for blob in raw_values(runtime, tenant_id).values())
