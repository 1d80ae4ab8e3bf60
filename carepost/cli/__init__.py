"""``carepost``: the operator's command line (Typer).

Every command reads the same settings as the server (``CAREPOST_*`` variables over
``carepost.toml``, see docs/operations.md) and calls the domain services; it holds
no logic of its own. A mistake the operator can fix (a bad setting, a duplicate
slug, an unknown email) prints one red line and exits with status 2; ``audit
verify`` exits with 1 when the trail is damaged. Secrets are printed only when a
command exists to hand one over once (a one-time password, a new API key, the
demo's TOTP enrolment), never the master key.
"""

from __future__ import annotations

from typing import Annotated

import typer

import carepost
from carepost.cli import (
    audit,
    config,
    demo,
    domains,
    imports,
    inbound,
    keys,
    organizations,
    server,
)
from carepost.cli.common import CarepostGroup, out
from carepost.gateway import cli as gateway_cli

app = typer.Typer(
    cls=CarepostGroup,
    help=(
        "carepost: secure healthcare communications. Operator commands.\n\n"
        "Settings come from CAREPOST_* environment variables and ./carepost.toml "
        "(see `carepost config check`). Start here: `carepost demo`, then `carepost serve`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold passwords and keys
    rich_markup_mode=None,
)
app.command()(server.serve)
app.command()(server.worker)
app.command()(server.migrate)
app.command()(demo.demo)
app.add_typer(organizations.tenant_app, name="tenant")
app.add_typer(organizations.user_app, name="user")
app.add_typer(organizations.apikey_app, name="api-key")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(config.config_app, name="config")
app.add_typer(imports.contacts_app, name="contacts")
app.add_typer(inbound.inbound_app, name="inbound")
app.add_typer(domains.domains_app, name="domains")
app.add_typer(gateway_cli.gateway_app, name="gateway")


def _version(value: bool) -> None:
    if value:
        out.print(f"carepost {carepost.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """carepost: secure healthcare communications. Operator commands."""


def main() -> None:
    app()


__all__ = ["app", "main"]
