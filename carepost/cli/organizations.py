"""Organizations, their console users and their API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from carepost.accounts import apikeys
from carepost.accounts import service as accounts
from carepost.accounts.permissions import PERMISSIONS, Role
from carepost.cli.common import find_tenant, find_user, open_runtime, operator, out
from carepost.tenancy import service as tenancy

tenant_app = typer.Typer(help="Create and list organizations (tenants).", no_args_is_help=True)
user_app = typer.Typer(help="Create console users and reset their sign-in.", no_args_is_help=True)
apikey_app = typer.Typer(help="Create scoped API keys for machines.", no_args_is_help=True)


@tenant_app.command("create")
def tenant_create(
    slug: Annotated[str, typer.Argument(help="Short name used to sign in, e.g. acme-health.")],
    name: Annotated[str, typer.Option(metavar="NAME", help="Display name, e.g. 'Acme Health'.")],
) -> None:
    """Create an organization with its own encryption keys and audit chain.

    Example: carepost tenant create acme-health --name "Acme Health"
    """
    with open_runtime() as runtime, runtime.database.session() as session:
        tenant, _keys = tenancy.create_tenant(
            session, runtime.keyring, slug=slug, name=name, actor=operator()
        )
        out.print(f"Created organization {tenant.slug} ({tenant.name}), id {tenant.id}.")
    out.print(f"Next: carepost user create --tenant {tenant.slug} --email ... --role owner")


@tenant_app.command("list")
def tenant_list() -> None:
    """List every organization: slug, status, id and name.

    Example: carepost tenant list
    """
    with open_runtime() as runtime, runtime.database.session() as session:
        tenants = tenancy.list_tenants(session)
    if not tenants:
        out.print("No organizations yet. Create one: carepost tenant create SLUG --name NAME")
        return
    width = max(len(tenant.slug) for tenant in tenants)
    for tenant in tenants:
        out.print(f"{tenant.slug:<{width}}  {tenant.status:<8}  {tenant.id}  {tenant.name}")


ROLE_HELP = "One of: " + ", ".join(role.value for role in Role) + "."


@user_app.command("create")
def user_create(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization's slug.")],
    email: Annotated[
        str, typer.Option(metavar="EMAIL", help="The user's email address (their sign-in name).")
    ],
    role: Annotated[str, typer.Option(metavar="ROLE", help=ROLE_HELP)],
    name: Annotated[str, typer.Option(metavar="NAME", help="The user's display name.")] = "",
) -> None:
    """Create a console user and print their one-time password (shown only now).

    They choose their own password at first sign-in; owners and admins also set
    up two-factor sign-in then.

    Example: carepost user create --tenant acme-health --email ana@acme.example --role admin
    """
    with open_runtime() as runtime:
        found = find_tenant(runtime, tenant)
        with runtime.tenant_session(found.id) as session:
            user, one_time = accounts.create_user(
                session, tenant_id=found.id, email=email, role=role, name=name, actor=operator()
            )
            address = user.email
    out.print(f"Created {role} {address} in {found.slug}.")
    out.print(f"One-time password (shown once, hand it over safely): {one_time}")


@user_app.command("list")
def user_list(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization's slug.")],
) -> None:
    """List the console users of an organization.

    Example: carepost user list --tenant acme-health
    """
    with open_runtime() as runtime:
        found = find_tenant(runtime, tenant)
        with runtime.tenant_session(found.id) as session:
            users = accounts.list_users(session, found.id)
            rows = [(u.email, u.role, u.status, "on" if u.totp_enabled else "off") for u in users]
    if not rows:
        out.print(f"No users in {found.slug} yet.")
        return
    width = max(len(row[0]) for row in rows)
    for email, role, status, mfa in rows:
        out.print(f"{email:<{width}}  {role:<9} {status:<9} two-factor {mfa}")


@user_app.command("reset-mfa")
def user_reset_mfa(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization's slug.")],
    email: Annotated[
        str, typer.Option(metavar="EMAIL", help="The user who lost their authenticator.")
    ],
) -> None:
    """Clear a user's two-factor sign-in (lost phone) and sign them out everywhere.

    They set it up again at their next sign-in.

    Example: carepost user reset-mfa --tenant acme-health --email ana@acme.example
    """
    with open_runtime() as runtime:
        found = find_tenant(runtime, tenant)
        with runtime.tenant_session(found.id) as session:
            user = find_user(session, found, email)
            accounts.reset_mfa(
                session,
                tenant_id=found.id,
                user_id=user.id,
                actor=operator(),
                actor_role=Role.OWNER.value,
            )
            address = user.email
    out.print(f"Two-factor sign-in of {address} is reset; they enrol again at next sign-in.")


APIKEY_HELP = f"""Create a scoped API key and print it (shown only now; stored hashed).

Use it as `Authorization: Bearer cp_...`. Scopes: {", ".join(PERMISSIONS)}.

Example: carepost api-key create --tenant demo --name test --scope users:read
"""


@apikey_app.command("create", help=APIKEY_HELP)
def apikey_create(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization's slug.")],
    name: Annotated[
        str, typer.Option(metavar="NAME", help="What the key is for, e.g. 'EHR sync'.")
    ],
    scope: Annotated[
        list[str],
        typer.Option(
            metavar="SCOPE", help="A permission the key gets (repeat for more), e.g. messages:send."
        ),
    ],
) -> None:
    with open_runtime() as runtime:
        found = find_tenant(runtime, tenant)
        with runtime.tenant_session(found.id) as session:
            key, secret = apikeys.create_api_key(
                session,
                tenant_id=found.id,
                name=name,
                scopes=scope,
                creator_permissions=frozenset(PERMISSIONS),
                actor=operator(),
            )
            prefix = key.prefix
    out.print(f"Created API key {prefix} with scopes {', '.join(sorted(set(scope)))}.")
    out.print(f"Key (shown once, store it in your secrets manager): {secret}")
