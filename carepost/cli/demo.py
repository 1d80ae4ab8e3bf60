"""``carepost demo``: a demo organization and admin, ready to sign in."""

from __future__ import annotations

import io
from typing import Annotated

import typer
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.accounts import service as accounts
from carepost.accounts import totp
from carepost.accounts.permissions import Role
from carepost.audit import service as audit
from carepost.cli.common import (
    find_tenant,
    find_user,
    load_cli_settings,
    open_runtime,
    operator,
    out,
    prepare_and_migrate,
    report_migration,
)
from carepost.core.config import Settings
from carepost.core.errors import NotFound
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import bind_tenant_keys
from carepost.domains import service as domains
from carepost.domains.models import SendingDomain
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

DEMO_SLUG = "demo"
DEMO_NAME = "Demo Clinic"
DEMO_EMAIL = "admin@demo.example"
# The demo sends as this domain. .example is reserved (RFC 2606): nobody can publish
# its DNS, so the demo command marks it verified itself, for the demo organization
# only (no exemption by slug: an organization called "demo" elsewhere proves its
# domains like any other).
DEMO_DOMAIN = "demo.example"


def _qr_code(uri: str) -> str:
    import segno

    buffer = io.StringIO()
    segno.make(uri, error="m").terminal(out=buffer, compact=True)
    return buffer.getvalue()


def _print_sign_in(settings: Settings, tenant: Tenant, password: str, uri: str) -> None:
    out.print()
    out.print(Text("Sign in to the carepost console", style="bold"))
    out.print(f"  Console URL        {settings.base_url}/login")
    out.print(f"  Organization       {tenant.slug}")
    out.print(f"  Email              {DEMO_EMAIL}")
    out.print(f"  One-time password  {password}   (you choose a new one at first sign-in)")
    out.print()
    out.print(
        "Two-factor sign-in is required for owners. Scan this QR code with an "
        "authenticator app (Google Authenticator, Microsoft Authenticator, 1Password, "
        "Aegis...), or add this link to it:"
    )
    out.print(f"  {uri}")
    typer.echo(_qr_code(uri))
    out.print("Then start the server (make run does): carepost serve")


def demo(
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Give the demo admin a fresh one-time password and restart two-factor enrolment.",
        ),
    ] = False,
) -> None:
    """Set up a demo organization and admin to try carepost (safe to run again).

    Migrates the database, creates the organization 'demo' (Demo Clinic) and its
    owner admin@demo.example, and prints the one-time password and the two-factor
    enrolment QR code. When the demo exists already it says so; --reset issues a
    new one-time password.

    Example: carepost demo
    """
    settings = load_cli_settings()
    report_migration(settings, prepare_and_migrate(settings))
    actor = operator()
    with open_runtime(settings) as runtime:
        created = _create_demo(runtime, actor)
        _ensure_demo_domain(runtime, actor)
        if created is not None:
            tenant, password, uri = created
            out.print(f"Created the demo organization {DEMO_SLUG!r} ({DEMO_NAME}).")
            _print_sign_in(settings, tenant, password, uri)
            return
        tenant = find_tenant(runtime, DEMO_SLUG)
        if not reset:
            out.print(
                f"The demo organization {DEMO_SLUG!r} exists already: sign in as {DEMO_EMAIL} "
                "with the password you chose (or the one-time password printed when it was "
                "created)."
            )
            out.print(
                "Lost it? `carepost demo --reset` prints a new one-time password "
                "and restarts two-factor enrolment."
            )
            return
        with runtime.tenant_session(tenant.id) as session:
            password, uri = _reset_demo_admin(session, tenant, actor)
    out.print(f"Reset the demo admin {DEMO_EMAIL}.")
    _print_sign_in(settings, tenant, password, uri)


def _create_demo(runtime: Runtime, actor: audit.Actor) -> tuple[Tenant, str, str] | None:
    """Create the demo organization and its owner, unless it exists (then None).

    One transaction: a failure leaves no half-made demo behind.
    """
    with runtime.database.session() as session:
        if session.scalar(select(Tenant.id).where(Tenant.slug == DEMO_SLUG)) is not None:
            return None
        tenant, keys = tenancy.create_tenant(
            session, runtime.keyring, slug=DEMO_SLUG, name=DEMO_NAME, actor=actor
        )
        with bind_tenant_keys(keys):
            user, password = accounts.create_user(
                session,
                tenant_id=tenant.id,
                email=DEMO_EMAIL,
                role=Role.OWNER.value,
                name="Demo Admin",
                actor=actor,
            )
            uri = totp.begin_totp_enrolment(session, user=user, tenant=tenant)
            session.flush()
    if password is None:  # create_user always issues one when no password is given
        raise RuntimeError("no one-time password was issued")
    return tenant, password, uri


def _ensure_demo_domain(runtime: Runtime, actor: audit.Actor) -> None:
    """Give the demo organization its sending domain, verified (also to a demo made by
    an earlier release, which was exempt by its slug instead)."""
    tenant = find_tenant(runtime, DEMO_SLUG)
    with runtime.tenant_session(tenant.id) as session:
        found = session.scalar(
            select(SendingDomain).where(
                SendingDomain.tenant_id == tenant.id, SendingDomain.name == DEMO_DOMAIN
            )
        )
        domain = found or domains.add_domain(session, tenant.id, name=DEMO_DOMAIN, actor=actor)
        if domain.state == "verified":
            return
        domain.state = "verified"
        audit.record(
            session,
            tenant_id=tenant.id,
            actor=actor,
            action="domain.verify",
            object_type="sending_domain",
            object_id=domain.id,
            details={"domain": DEMO_DOMAIN, "by": "carepost demo"},
        )
        session.flush()
        session.info.pop(domains.SENDERS_CACHE, None)


def _reset_demo_admin(session: Session, tenant: Tenant, actor: audit.Actor) -> tuple[str, str]:
    try:
        user = find_user(session, tenant, DEMO_EMAIL)
    except NotFound:
        user, issued = accounts.create_user(
            session, tenant_id=tenant.id, email=DEMO_EMAIL, role=Role.OWNER.value, actor=actor
        )
        if issued is None:
            raise RuntimeError("no one-time password was issued") from None
        password = issued
    else:
        password = accounts.issue_one_time_password(
            session, tenant_id=tenant.id, user_id=user.id, actor=actor
        )
        accounts.reset_mfa(
            session,
            tenant_id=tenant.id,
            user_id=user.id,
            actor=actor,
            actor_role=Role.OWNER.value,
        )
    return password, totp.begin_totp_enrolment(session, user=user, tenant=tenant)
