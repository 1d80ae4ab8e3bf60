"""Shared fixtures: a real database (SQLite by default, PostgreSQL when
``CAREPOST_TEST_DATABASE_URL`` is set, in a schema of its own per run), a runtime,
fresh tenants per test, and the PHI canary that the whole suite's logs are
scanned for at the end.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from carepost.core import migrations
from carepost.core.config import Settings, load_settings
from carepost.core.logging import configure_logging
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant
from tests.canaries import PHI_CANARIES, phi_value

__all__ = ["phi_value"]

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
ARTIFACTS = Path(os.environ.get("CAREPOST_TEST_ARTIFACTS", "test-artifacts"))
LOG_FILES: list[Path] = []


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("carepost")


@pytest.fixture(scope="session")
def log_file(run_dir: Path) -> Path:
    return run_dir / "carepost.log"


def _postgres_schema_url() -> tuple[str, str] | None:
    url = os.environ.get("CAREPOST_TEST_DATABASE_URL")
    if not url:
        return None
    return url, f"carepost_test_{RUN_ID}"


@pytest.fixture(scope="session")
def settings(run_dir: Path, log_file: Path) -> Iterator[Settings]:
    key_file = run_dir / "master.key"
    init_key_file(key_file)
    postgres = _postgres_schema_url()
    if postgres:
        url, schema = postgres
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides: dict[str, object] = {"database_url": url, "database_schema": schema}
    else:
        overrides = {"database_url": f"sqlite:///{run_dir / 'carepost.db'}"}
    configured = load_settings(
        environment="test",
        master_key_file=key_file,
        data_dir=run_dir,
        log_file=log_file,
        cookie_secure=True,
        base_url="https://testserver",
        **overrides,
    )
    configure_logging("debug", "json", log_file)
    yield configured
    if postgres:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[Runtime]:
    built = build_runtime(settings)
    migrations.upgrade(built.database.engine)
    yield built
    built.close()


@pytest.fixture
def make_tenant(runtime: Runtime) -> Callable[..., tuple[Tenant, TenantKeys]]:
    def make(name: str = "Test Clinic") -> tuple[Tenant, TenantKeys]:
        slug = f"t-{uuid.uuid4().hex[:12]}"
        with runtime.database.session() as session:
            return tenancy.create_tenant(session, runtime.keyring, slug=slug, name=name)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., tuple[Tenant, TenantKeys]]) -> tuple[Tenant, TenantKeys]:
    return make_tenant()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any seeded PHI value reached the logs."""
    paths = list(LOG_FILES)
    leaked: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        content = path.read_text(encoding="utf-8", errors="replace")
        leaked.extend(sorted(c for c in PHI_CANARIES if c in content))
    if leaked:
        print(f"\nPHI LEAK: {len(leaked)} seeded PHI values found in the logs, e.g. {leaked[0]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _remember_log_file(log_file: Path, settings: Settings) -> None:
    LOG_FILES.append(log_file)


@pytest.fixture(scope="session")
def app(runtime: Runtime):
    from carepost.api.app import create_app

    return create_app(runtime)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


@pytest.fixture
def make_api_key(runtime: Runtime) -> Callable[..., dict[str, str]]:
    """Headers carrying a fresh API key of ``tenant`` with ``scopes`` (default: everything)."""
    from carepost.accounts import apikeys
    from carepost.accounts.permissions import PERMISSIONS
    from carepost.audit.service import SYSTEM

    def make(tenant: tuple[Tenant, TenantKeys], scopes: list[str] | None = None) -> dict[str, str]:
        tenant_row, keys = tenant
        with runtime.bound_session(keys) as session:
            _key, secret = apikeys.create_api_key(
                session,
                tenant_id=tenant_row.id,
                name="test key",
                scopes=scopes or sorted(PERMISSIONS),
                creator_permissions=frozenset(PERMISSIONS),
                actor=SYSTEM,
            )
        return {"Authorization": f"Bearer {secret}"}

    return make
