"""Fixtures of the import tests: a tenant with the custom fields of a typical clinic file,
and helpers to write CSV files and read the contacts an import made."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy.models import Tenant

TenantPair = tuple[Tenant, TenantKeys]
CONDITIONS = ["e11", "i10", "j45", "e78", "f32"]


def add_clinic_fields(runtime: Runtime, tenant: TenantPair) -> None:
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        for key, kind, extra in (
            ("zip", "string", {}),
            ("gender", "choice", {"choices": ["female", "male", "other"]}),
            ("insurance", "choice", {"choices": ["medicare", "medicaid", "commercial"]}),
            ("conditions", "multi_choice", {"choices": CONDITIONS}),
            ("a1c", "number", {"granularity": "0.1"}),
            ("last_visit", "date", {}),
            ("smoker", "boolean", {}),
        ):
            custom_fields.create_field(
                session, tenant_row.id, key=key, label=key, type=kind, actor=SYSTEM, **extra
            )


@pytest.fixture
def clinic(runtime: Runtime, tenant: TenantPair) -> TenantPair:
    add_clinic_fields(runtime, tenant)
    return tenant


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(content: str | bytes, name: str = "contacts.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write
