"""What every command shares: output, error handling, settings, the runtime, the operator."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.core import TyperGroup

from carepost.accounts import service as accounts
from carepost.accounts.models import User
from carepost.audit import service as audit
from carepost.core import migrations
from carepost.core.config import Settings, get_settings
from carepost.core.database import Database, ensure_data_dir
from carepost.core.errors import CarepostError, ConfigError, NotFound
from carepost.core.logging import configure_logging
from carepost.core.runtime import Runtime, build_runtime
from carepost.crypto.keyprovider import init_key_file
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

EXIT_USER_ERROR = 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CarepostGroup(TyperGroup):
    """Turns every CarepostError into one red line and exit status 2 (no traceback)."""

    # ``Any``: the context class moved when typer vendored click (0.20+).
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CarepostError as exc:
            fail(exc)


def fail(exc: CarepostError) -> NoReturn:
    message = exc.detail
    named = [e.field for e in exc.errors if e.field and e.field not in message]
    if named:
        message = f"{named[0]}: {message}"
    err.print(Text(f"error: {message}", style="bold red"))
    raise typer.Exit(EXIT_USER_ERROR)


def load_cli_settings() -> Settings:
    """Validated settings, with logging set up as they say."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_file)
    return settings


@contextmanager
def open_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """The runtime of a command, on a reachable and migrated database."""
    runtime = build_runtime(settings or load_cli_settings())
    try:
        check_database(runtime)
        yield runtime
    finally:
        runtime.close()


def check_database(runtime: Runtime) -> None:
    """Turn the two usual first-run problems into clear errors: no database, no tables."""
    url = make_url(runtime.settings.database_url).render_as_string(hide_password=True)
    try:
        revision = migrations.current_revision(runtime.database.engine)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigError(f"cannot reach the database {url}: {reason}") from None
    if revision is None:
        raise ConfigError(f"the database {url} is empty: run `carepost migrate` first")


def operator() -> audit.Actor:
    """Who the audit trail names for a CLI action: the operating system user."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = "unknown"
    return audit.Actor(type="system", id="cli", label=f"carepost command line ({who})")


def find_tenant(runtime: Runtime, slug: str) -> Tenant:
    with runtime.database.session() as session:
        try:
            return tenancy.get_tenant_by_slug(session, slug)
        except NotFound:
            raise NotFound(f"no organization with the slug {slug!r}") from None


def find_user(session: Session, tenant: Tenant, email: str) -> User:
    address = accounts.normalize_email(email)
    for user in accounts.list_users(session, tenant.id):
        if user.email == address:
            return user
    raise NotFound(f"no user {address} in {tenant.slug}", field="email")


@dataclass(frozen=True)
class MigrationResult:
    key_file_created: bool
    before: str | None
    after: str | None


def prepare_and_migrate(settings: Settings, revision: str = "head") -> MigrationResult:
    """Create the data directory (0700) and the master key file if missing; migrate."""
    ensure_data_dir(settings)
    created = settings.master_key is None and init_key_file(settings.master_key_file)
    database = Database(settings)
    try:
        before = migrations.current_revision(database.engine)
        migrations.upgrade(database.engine, revision)
        after = migrations.current_revision(database.engine)
    finally:
        database.dispose()
    return MigrationResult(created, before, after)


def report_migration(settings: Settings, result: MigrationResult) -> None:
    if result.key_file_created:
        out.print(
            f"Created the master key file {settings.master_key_file} (mode 0600). "
            "Back it up apart from the database: without it the encrypted data is lost."
        )
    if result.before == result.after:
        out.print(f"Database is up to date (revision {result.after}).")
    else:
        out.print(f"Database migrated from {result.before or 'empty'} to {result.after}.")
