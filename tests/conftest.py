"""Shared fixtures: a real database (SQLite by default, PostgreSQL when
``CAREPOST_TEST_DATABASE_URL`` is set, in a schema of its own per run), a runtime,
fresh tenants per test, users with signed-in sessions, and the canaries (seeded
PHI and every secret the tests use) that the whole suite's logs are scanned for
at the end.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from carepost.core import migrations
from carepost.core.config import Settings, load_settings
from carepost.core.logging import configure_logging
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.crypto.keyring import TenantKeys
from carepost.domains.models import SendingDomain
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

# The canary registry lives in its own module: pytest loads this file as the plugin
# "conftest" while tests import it as "tests.conftest", two module objects whose
# sets would differ, and the end-of-run scan would see none of the tests' canaries.
from tests.canaries import (
    PHI_CANARIES,
    SECRET_CANARIES,
    leaked_canaries,
    new_password,
    phi_value,
    secret_value,
)

# Property tests check correctness, not speed: a loaded CI machine must not turn a
# slow example into a failure (benchmarks under bench/ measure speed).
hypothesis_settings.register_profile("carepost", deadline=None)
hypothesis_settings.load_profile("carepost")

__all__ = [
    "PHI_CANARIES",
    "SECRET_CANARIES",
    "leaked_canaries",
    "new_password",
    "phi_value",
    "secret_value",
]

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
ARTIFACTS = Path(os.environ.get("CAREPOST_TEST_ARTIFACTS", "test-artifacts"))


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


# The domains the tests send from: a From address must be on a verified sending domain
# of the tenant (carepost/domains/senders.py). Verified here without keys, so mail from
# them goes unsigned; tests of the domains themselves pass ``verified_senders=()``.
TEST_SENDING_DOMAINS = ("clinic.example", "a.example")


def add_verified_domains(session: Session, tenant_id: uuid.UUID, names: Iterable[str]) -> None:
    """Sending domains already verified, as if their DNS check had passed."""
    for name in names:
        session.add(
            SendingDomain(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                name=name,
                state="verified",
                created_by_type="system",
                created_by_id="tests",
            )
        )
    session.flush()


@pytest.fixture
def make_tenant(runtime: Runtime) -> Callable[..., tuple[Tenant, TenantKeys]]:
    def make(
        name: str = "Test Clinic", *, verified_senders: tuple[str, ...] = TEST_SENDING_DOMAINS
    ) -> tuple[Tenant, TenantKeys]:
        slug = f"t-{uuid.uuid4().hex[:12]}"
        with runtime.database.session() as session:
            made = tenancy.create_tenant(session, runtime.keyring, slug=slug, name=name)
            add_verified_domains(session, made[0].id, verified_senders)
            return made

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., tuple[Tenant, TenantKeys]]) -> tuple[Tenant, TenantKeys]:
    return make_tenant()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any seeded PHI value or any secret a test used reached the logs."""
    paths = set(_LOG_FILES)
    leaked: list[str] = []
    secrets_leaked: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        content = path.read_text(encoding="utf-8", errors="replace")
        leaked.extend(leaked_canaries(content, PHI_CANARIES))
        secrets_leaked.extend(leaked_canaries(content, SECRET_CANARIES))
    if leaked:
        print(f"\nPHI LEAK: {len(leaked)} seeded PHI values found in the logs, e.g. {leaked[0]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if secrets_leaked:
        # Never print the secret itself: only how many and how long.
        lengths = sorted({len(s) for s in secrets_leaked})
        print(f"\nSECRET LEAK: {len(secrets_leaked)} secrets found in the logs (lengths {lengths})")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The log file of this run, for the scan. (Not in pytest's cache: that is off with
# -p no:cacheprovider, and a run without tests would scan the previous run's log.)
_LOG_FILES: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remember_log_file(log_file: Path, settings: Settings) -> None:
    _LOG_FILES.append(log_file)


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
        secret_value(secret)
        secret_value(secret.split("_", 2)[2])
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def make_user(runtime: Runtime) -> Callable[..., tuple[uuid.UUID, str, str]]:
    """A user of ``tenant`` with ``role``; returns (id, email, password)."""
    from carepost.accounts import service as accounts

    def make(tenant: tuple[Tenant, TenantKeys], role: str = "owner") -> tuple[uuid.UUID, str, str]:
        tenant_row, keys = tenant
        password = new_password()
        email = f"{role}-{uuid.uuid4().hex[:8]}@clinic.example"
        with runtime.bound_session(keys) as session:
            user, _ = accounts.create_user(
                session, tenant_id=tenant_row.id, email=email, role=role, password=password
            )
            return user.id, email, password

    return make


@pytest.fixture
def sign_in(runtime: Runtime) -> Callable[..., dict[str, str]]:
    """Headers of a fully signed-in console session (MFA passed) for a user:
    the session cookie and the session's CSRF token."""
    from carepost.accounts import sessions
    from carepost.accounts.models import User
    from carepost.api.deps import SESSION_COOKIE

    def make(tenant: tuple[Tenant, TenantKeys], user_id: uuid.UUID) -> dict[str, str]:
        tenant_row, keys = tenant
        with runtime.bound_session(keys) as session:
            user = session.get(User, user_id)
            assert user is not None
            _token, row = sessions.create_session(
                session, user=user, tenant=tenant_row, stage=sessions.STAGE_PASSWORD_OK
            )
            token = sessions.promote_session(session, row)
            csrf = row.csrf_token
        secret_value(token)
        secret_value(csrf)
        return {"Cookie": f"{SESSION_COOKIE}={token}", "X-CSRF-Token": csrf}

    return make


@pytest.fixture
def audit_trail(runtime: Runtime) -> Callable[..., list]:
    """The audit events of a tenant, oldest first, optionally only one action."""
    from sqlalchemy import select

    from carepost.audit.models import AuditEvent

    def read(tenant: tuple[Tenant, TenantKeys], action: str | None = None) -> list[AuditEvent]:
        query = select(AuditEvent).where(AuditEvent.tenant_id == tenant[0].id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        with runtime.database.session() as session:
            return list(session.scalars(query.order_by(AuditEvent.seq)))

    return read


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """argon2id with the cheapest parameters: the suite creates hundreds of users and
    the production cost (tens of milliseconds each) would dominate its run time. The
    algorithm and code paths are the production ones."""
    from argon2 import PasswordHasher

    from carepost.accounts import passwords

    production = passwords._hasher
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    passwords._hasher = production
