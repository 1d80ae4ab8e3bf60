"""The operator's command line, driven through the environment like an operator would,
against the real database of the run (SQLite or PostgreSQL)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from carepost.accounts import service as accounts
from carepost.accounts import totp
from carepost.accounts.models import User
from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.cli import app
from carepost.core.config import load_settings, reset_settings_cache
from carepost.core.errors import AuthenticationFailed
from carepost.core.runtime import build_runtime
from carepost.domains.models import SendingDomain
from carepost.domains.senders import check_sender
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant
from tests.environment import carepost_command, carepost_environment, child_environment, free_port

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


@pytest.fixture
def use_settings(monkeypatch, tmp_path):
    """Point the CLI at some settings through CAREPOST_* variables, from an empty
    directory (no carepost.toml), as an operator's shell would."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CAREPOST_"):
            monkeypatch.delenv(name)

    def use(settings, **extra: str) -> None:
        for name, value in {**carepost_environment(settings), **extra}.items():
            monkeypatch.setenv(name, value)
        reset_settings_cache()

    reset_settings_cache()
    yield use
    reset_settings_cache()


@pytest.fixture
def cli(settings, runtime, use_settings):
    """The CLI working on the suite's (migrated) database."""
    use_settings(settings)
    return invoke


@pytest.fixture
def scratch(settings, tmp_path, use_settings):
    """An empty database and no data directory or master key yet: a fresh install."""
    data_dir = tmp_path / "var"
    schema = None
    if settings.is_sqlite:
        overrides: dict[str, object] = {"database_url": f"sqlite:///{data_dir / 'carepost.db'}"}
    else:
        schema = f"{settings.database_schema}_{secrets.token_hex(3)}"
        admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides = {"database_url": settings.database_url, "database_schema": schema}
    fresh = load_settings(
        environment="test",
        data_dir=data_dir,
        master_key_file=data_dir / "master.key",
        log_file=settings.log_file,
        base_url="https://carepost.example",
        **overrides,
    )
    use_settings(fresh)
    yield fresh
    if schema is not None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _one_time_password(output: str) -> str:
    match = re.search(r"One-time password\s+(\S+)", output)
    assert match, output
    return match.group(1)


def _otpauth_uri(output: str) -> str:
    match = re.search(r"(otpauth://totp/\S+)", output)
    assert match, output
    return match.group(1)


@contextmanager
def _demo_session(settings) -> Iterator[tuple[Tenant, Session]]:
    """The demo organization and a session bound to it, on the scratch database."""
    runtime = build_runtime(settings)
    try:
        with runtime.database.session() as session:
            tenant = tenancy.get_tenant_by_slug(session, "demo")
        with runtime.tenant_session(tenant.id) as session:
            yield tenant, session
    finally:
        runtime.close()


def _sign_in_with(settings, password: str, uri: str) -> None:
    """The printed password and enrolment link work: password, then a TOTP code."""
    with _demo_session(settings) as (tenant, session):
        user = accounts.authenticate_password(
            session, tenant=tenant, email="admin@demo.example", password=password
        )
        assert user.role == "owner" and user.password_must_change
        secret = parse_qs(urlparse(uri).query)["secret"][0]
        assert user.totp_secret == secret
        codes = totp.confirm_totp_enrolment(
            session, user=user, code=pyotp.TOTP(secret).now(), actor=SYSTEM
        )
        assert codes


def _password_fails(settings, password: str) -> None:
    with _demo_session(settings) as (tenant, session), pytest.raises(AuthenticationFailed):
        accounts.authenticate_password(
            session, tenant=tenant, email="admin@demo.example", password=password
        )


# --- demo and migrate ------------------------------------------------------------------


def test_demo_sets_up_an_admin_once_and_prints_how_to_sign_in(scratch):
    first = invoke("demo")
    assert first.exit_code == 0, first.output
    printed = first.stdout
    password = _one_time_password(printed)
    uri = _otpauth_uri(printed)
    assert "https://carepost.example/login" in printed
    assert re.search(r"Organization\s+demo", printed)
    assert re.search(r"Email\s+admin@demo\.example", printed)
    assert "▀" in printed or "█" in printed  # the QR code
    assert stat.S_IMODE(scratch.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(scratch.master_key_file.stat().st_mode) == 0o600
    for key in json.loads(scratch.master_key_file.read_text())["keys"].values():
        assert key not in first.output
    _sign_in_with(scratch, password, uri)

    again = invoke("demo")
    assert again.exit_code == 0, again.output
    assert "exists already" in again.stdout and "--reset" in again.stdout
    assert "otpauth://" not in again.output and "One-time password" not in again.output

    reset = invoke("demo", "--reset")
    assert reset.exit_code == 0, reset.output
    new_password, new_uri = _one_time_password(reset.stdout), _otpauth_uri(reset.stdout)
    assert new_password != password and new_uri != uri
    _password_fails(scratch, password)
    _sign_in_with(scratch, new_password, new_uri)


def test_the_demo_sends_as_its_verified_demo_domain_and_nothing_else(scratch):
    """No exemption by slug: the demo command verifies demo.example for the demo
    organization (once, audited), and the demo may send from it and from nowhere else."""
    assert invoke("demo").exit_code == 0
    assert invoke("demo").exit_code == 0  # again: nothing added twice
    with _demo_session(scratch) as (tenant, session):
        rows = session.execute(
            select(SendingDomain.name, SendingDomain.state).where(
                SendingDomain.tenant_id == tenant.id
            )
        ).all()
        assert [tuple(row) for row in rows] == [("demo.example", "verified")]
        assert check_sender(session, tenant.id, "care@demo.example") is None
        assert check_sender(session, tenant.id, "care@news.demo.example") is None
        assert check_sender(session, tenant.id, "billing@bank.example") is not None
        verified = session.scalars(
            select(AuditEvent).where(
                AuditEvent.tenant_id == tenant.id, AuditEvent.action == "domain.verify"
            )
        ).all()
        assert len(verified) == 1


def test_migrate_creates_the_key_file_once_and_goes_down_and_up(scratch):
    first = invoke("migrate")
    assert first.exit_code == 0, first.output
    assert "Created the master key file" in first.stdout
    assert "migrated from empty" in first.stdout
    key_file = scratch.master_key_file.read_bytes()

    again = invoke("migrate")
    assert again.exit_code == 0 and "up to date" in again.stdout
    assert "master key" not in again.stdout
    assert scratch.master_key_file.read_bytes() == key_file

    refused = invoke("migrate", "--down", "base", input="n\n")
    assert refused.exit_code != 0
    down = invoke("migrate", "--down", "base", "--yes")
    assert down.exit_code == 0 and "base (empty)" in down.stdout
    up = invoke("migrate")
    assert up.exit_code == 0 and "migrated from empty" in up.stdout


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [("config", "check"), ("tenant", "list"), ("demo",)])
def test_a_bad_setting_is_one_clear_line_naming_it(settings, use_settings, command):
    use_settings(settings, CAREPOST_PORT="99999")
    result = invoke(*command)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "CAREPOST_PORT" in lines[0]


def test_a_bad_master_key_is_named_without_echoing_it(settings, use_settings):
    use_settings(settings, CAREPOST_MASTER_KEY="not-base64-but-secret!")
    result = invoke("config", "check")
    assert result.exit_code == 2
    assert "CAREPOST_MASTER_KEY" in result.output
    assert "not-base64-but-secret!" not in result.output


def test_config_check_shows_settings_with_secrets_hidden(settings, use_settings):
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    use_settings(
        settings,
        CAREPOST_MASTER_KEY=master_key,
        CAREPOST_DATABASE_URL="postgresql+psycopg://carepost:pw-s3cret@db.example/carepost",
        CAREPOST_DATABSE_URL="sqlite:///typo.db",
    )
    result = invoke("config", "check")
    assert result.exit_code == 0, result.output
    assert master_key not in result.output and "pw-s3cret" not in result.output
    assert re.search(r"master_key\s+set \(hidden\)", result.stdout)
    assert "postgresql+psycopg://carepost:***@db.example/carepost" in result.stdout
    assert "CAREPOST_DATABSE_URL is not a carepost setting" in result.output
    assert "Configuration is valid" in result.stdout


# --- organizations, users, API keys ----------------------------------------------------


def test_tenant_create_then_a_duplicate_is_a_clear_error(cli):
    slug = f"cli-{secrets.token_hex(4)}"
    created = cli("tenant", "create", slug, "--name", "CLI Clinic")
    assert created.exit_code == 0, created.output
    assert f"Created organization {slug}" in created.stdout
    assert slug in cli("tenant", "list").stdout

    duplicate = cli("tenant", "create", slug, "--name", "Again")
    assert duplicate.exit_code == 2
    assert duplicate.output.strip() == f"error: an organization with the slug '{slug}' exists"

    invalid = cli("tenant", "create", "Not A Slug", "--name", "X")
    assert invalid.exit_code == 2 and invalid.output.startswith("error: slug:")


def test_user_create_prints_a_one_time_password_that_signs_in(cli, runtime, tenant):
    tenant_row, _keys = tenant
    result = cli(
        "user", "create", "--tenant", tenant_row.slug, "--email", "Ana@Clinic.example",
        "--role", "marketer", "--name", "Ana",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    password = re.search(r"One-time password \(shown once.*\): (\S+)", result.stdout).group(1)
    with runtime.tenant_session(tenant_row.id) as session:
        user = accounts.authenticate_password(
            session, tenant=tenant_row, email="ana@clinic.example", password=password
        )
        assert user.role == "marketer" and user.password_must_change
        event = session.scalar(
            select(AuditEvent).where(
                AuditEvent.tenant_id == tenant_row.id, AuditEvent.action == "user.create"
            )
        )
        assert event.actor_type == "system" and event.actor_label.startswith("carepost command")

    listed = cli("user", "list", "--tenant", tenant_row.slug)
    assert "ana@clinic.example" in listed.stdout and "marketer" in listed.stdout

    again = cli("user", "create", "--tenant", tenant_row.slug, "--email", "ana@clinic.example",
                "--role", "analyst")  # fmt: skip
    assert again.exit_code == 2 and "exists" in again.output
    bad_role = cli("user", "create", "--tenant", tenant_row.slug, "--email", "b@clinic.example",
                   "--role", "boss")  # fmt: skip
    assert bad_role.exit_code == 2 and "role must be one of" in bad_role.output
    no_tenant = cli("user", "create", "--tenant", "no-such-org", "--email", "b@clinic.example",
                    "--role", "analyst")  # fmt: skip
    assert no_tenant.exit_code == 2
    assert no_tenant.output.strip() == "error: no organization with the slug 'no-such-org'"


def test_user_reset_mfa_clears_the_second_factor(cli, runtime, tenant):
    tenant_row, _keys = tenant
    with runtime.tenant_session(tenant_row.id) as session:
        user, _password = accounts.create_user(
            session, tenant_id=tenant_row.id, email="lost@clinic.example", role="admin"
        )
        totp.begin_totp_enrolment(session, user=user, tenant=tenant_row)
        user.totp_enabled = True
        user_id = user.id
    result = cli("user", "reset-mfa", "--tenant", tenant_row.slug, "--email", "lost@clinic.example")
    assert result.exit_code == 0, result.output
    with runtime.tenant_session(tenant_row.id) as session:
        user = session.get(User, user_id)
        assert not user.totp_enabled and user.totp_secret is None
    unknown = cli("user", "reset-mfa", "--tenant", tenant_row.slug, "--email", "x@clinic.example")
    assert unknown.exit_code == 2 and "no user x@clinic.example" in unknown.output


def test_api_key_create_prints_a_key_that_calls_the_api(cli, tenant, client):
    tenant_row, _keys = tenant
    result = cli("api-key", "create", "--tenant", tenant_row.slug, "--name", "cli test",
                 "--scope", "users:read")  # fmt: skip
    assert result.exit_code == 0, result.output
    secret = re.search(r"(cp_\S+)", result.stdout).group(1)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json()["organization"] == tenant_row.slug
    assert me.json()["permissions"] == ["users:read"]
    unknown = cli("api-key", "create", "--tenant", tenant_row.slug, "--name", "x",
                  "--scope", "everything")  # fmt: skip
    assert unknown.exit_code == 2 and "unknown scope 'everything'" in unknown.output


# --- keys ------------------------------------------------------------------------------


def test_keys_rotate_one_tenant_then_destroy_its_retired_key(cli, tenant):
    tenant_row, _keys = tenant
    rotated = cli("keys", "rotate", "--tenant", tenant_row.slug)
    assert rotated.exit_code == 0, rotated.output
    assert f"{tenant_row.slug}: data key v1 -> v2" in rotated.stdout
    assert "retired v1" in rotated.stdout

    destroyed = cli("keys", "destroy-retired", "--tenant", tenant_row.slug, "--yes")
    assert destroyed.exit_code == 0, destroyed.output
    assert f"{tenant_row.slug}: destroyed key versions v1" in destroyed.stdout

    unknown = cli("keys", "rotate", "--tenant", "no-such-org")
    assert unknown.exit_code == 2 and unknown.output.startswith("error:")


# --- audit -----------------------------------------------------------------------------


def test_audit_export_rejects_a_time_it_cannot_read(cli, tenant):
    tenant_row, _keys = tenant
    result = cli("audit", "export", "--tenant", tenant_row.slug, "--since", "last tuesday")
    assert result.exit_code == 2 and result.output.startswith("error: --since:")
    bad_format = cli("audit", "export", "--tenant", tenant_row.slug, "--format", "xml")
    assert bad_format.exit_code == 2 and "csv or jsonl" in bad_format.output


def test_audit_verify_names_an_edited_event_in_the_real_trail(scratch):
    assert invoke("demo").exit_code == 0
    intact = invoke("audit", "verify", "--tenant", "demo")
    assert intact.exit_code == 0, intact.output

    database = build_runtime(scratch).database
    try:
        with database.session() as session:
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "user.create")
            ).one()
            session.execute(
                update(AuditEvent).where(AuditEvent.id == event.id).values(reason="edited")
            )
    finally:
        database.dispose()
    damaged = invoke("audit", "verify")
    assert damaged.exit_code == 1
    assert f"seq {event.seq}" in damaged.stdout


def test_audit_export_writes_the_trail_and_records_the_export(scratch, tmp_path):
    assert invoke("demo").exit_code == 0
    target = tmp_path / "trail.jsonl"
    result = invoke(
        "audit", "export", "--tenant", "demo", "--format", "jsonl", "--output", str(target)
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    actions = [json.loads(line)["action"] for line in target.read_text().splitlines()]
    assert "tenant.create" in actions and "user.create" in actions

    csv_out = invoke("audit", "export", "--tenant", "demo", "--format", "csv", "--action", "user.*")
    assert csv_out.exit_code == 0, csv_out.output
    assert "user.create" in csv_out.stdout and "tenant.create" not in csv_out.stdout
    assert "audit.export" in [
        json.loads(line)["action"]
        for line in invoke("audit", "export", "--tenant", "demo").stdout.splitlines()
    ]


# --- worker and serve ------------------------------------------------------------------


def test_worker_once_runs_every_job_and_says_what_each_did(cli):
    result = cli("worker", "--once")
    assert result.exit_code == 0, result.output
    assert re.search(r"accounts\.purge_sessions: \d+ done", result.stdout)
    assert re.search(r"audit\.anchor_heads: \d+ done", result.stdout)
    unknown = cli("worker", "--job", "no.such.job")
    assert unknown.exit_code == 2 and "no job named 'no.such.job'" in unknown.output


def test_serve_starts_and_answers_health_checks(scratch, tmp_path):
    assert invoke("migrate").exit_code == 0
    port = free_port()
    log = tmp_path / "serve.out"
    with log.open("w") as output:
        server = subprocess.Popen(
            carepost_command("serve", "--port", str(port), "--no-migrate"),
            env=child_environment(scratch),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in log.read_text()


# --- help ------------------------------------------------------------------------------

COMMANDS = [
    ("serve",), ("worker",), ("migrate",), ("demo",), ("tenant", "create"), ("tenant", "list"),
    ("user", "create"), ("user", "list"), ("user", "reset-mfa"), ("api-key", "create"),
    ("keys", "rotate"), ("keys", "destroy-retired"), ("keys", "remove-master"),
    ("audit", "verify"), ("audit", "export"), ("config", "check"), ("contacts", "import"),
    ("inbound", "serve"),
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself_with_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example: carepost " + " ".join(command) in result.output


def test_the_version_and_python_m_carepost(tmp_path):
    assert invoke("--version").stdout.strip().startswith("carepost ")
    completed = subprocess.run(
        carepost_command("--help"), capture_output=True, text=True, cwd=tmp_path, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    assert completed.returncode == 0 and "demo" in completed.stdout
