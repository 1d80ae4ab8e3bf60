"""``carepost domains``: sending domains and their DKIM keys from the command line.

``add`` prints the DNS records to publish; ``check`` asks DNS and says what to fix
(exit status 1 while a record is wrong or missing); ``rotate`` starts a key
rotation, and ``rotate --promote`` confirms the new records are published.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from carepost.cli.common import find_tenant, open_runtime, operator, out
from carepost.core.errors import NotFound
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.domains import service
from carepost.domains.checks import make_resolver
from carepost.domains.keys import zone_text
from carepost.domains.models import SendingDomain

domains_app = typer.Typer(
    help="Sending domains: DKIM keys and the SPF/DKIM/DMARC records to publish.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
Tenant = Annotated[str, typer.Option(metavar="SLUG", help="The organization.")]
Domain = Annotated[str, typer.Argument(help="The domain, like clinic.example.")]
LEVEL_STYLE = {"ok": "green", "warning": "yellow", "error": "bold red"}


def _keys(runtime: Runtime, slug: str) -> TenantKeys:
    organization = find_tenant(runtime, slug)
    with runtime.database.session() as session:
        return runtime.keyring.load(session, organization.id)


def _find(session: Session, keys: TenantKeys, name: str) -> SendingDomain:
    wanted = service.normalize_domain(name)
    for domain in service.list_domains(session, keys.tenant_id):
        if domain.name == wanted:
            return domain
    raise NotFound(f"no sending domain {wanted} in this organization (add it first)")


def _print_records(session: Session, runtime: Runtime, domain: SendingDomain) -> None:
    out.print(f"Publish these DNS records for {domain.name}:")
    for record in service.records_for(session, domain, runtime.settings):
        state = f" ({record.key_state} key)" if record.key_state else ""
        out.print(f"\n{record.kind.upper()}{state}: {record.type} {record.name}")
        out.print(f"  {zone_text(record.value)}")
        if record.note:
            out.print(f"  {record.note}", style="dim")


@domains_app.command("add")
def add(name: Domain, tenant: Tenant) -> None:
    """Add a sending domain: generates its RSA-2048 and Ed25519 DKIM keys and prints
    the records to publish."""
    with open_runtime() as runtime:
        keys = _keys(runtime, tenant)
        with runtime.bound_session(keys) as session:
            domain = service.add_domain(session, keys.tenant_id, name=name, actor=operator())
            _print_records(session, runtime, domain)


@domains_app.command("list")
def list_domains(tenant: Tenant) -> None:
    """The organization's sending domains, their state and their active selectors."""
    with open_runtime() as runtime:
        keys = _keys(runtime, tenant)
        with runtime.bound_session(keys) as session:
            table = Table("domain", "state", "last check", "active", "next")
            for domain in service.list_domains(session, keys.tenant_id):
                key_list = service.domain_keys(session, keys.tenant_id, domain.id)
                table.add_row(
                    domain.name,
                    domain.state,
                    (domain.last_check or {}).get("level", "never"),
                    " ".join(k.selector for k in key_list if k.state == "active"),
                    " ".join(k.selector for k in key_list if k.state == "next"),
                )
            out.print(table)


@domains_app.command("records")
def records(name: Domain, tenant: Tenant) -> None:
    """Print the DNS records to publish for a domain."""
    with open_runtime() as runtime:
        keys = _keys(runtime, tenant)
        with runtime.bound_session(keys) as session:
            _print_records(session, runtime, _find(session, keys, name))


@domains_app.command("check")
def check(
    name: Domain,
    tenant: Tenant,
    nameserver: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST[:PORT]",
            help="Ask this name server (repeat) instead of CAREPOST_DOMAINS_DNS_NAMESERVERS.",
        ),
    ] = None,
) -> None:
    """Check the domain's SPF, DKIM and DMARC records in DNS and say what to fix.

    Exit status: 0 when nothing is wrong (warnings allowed), 1 when a record is wrong
    or missing.
    """
    with open_runtime() as runtime:
        keys = _keys(runtime, tenant)
        resolver = None
        if nameserver:
            resolver = make_resolver(nameserver, timeout=runtime.settings.domains_dns_timeout)
        with runtime.bound_session(keys) as session:
            domain = _find(session, keys, name)
            result = service.check_dns(
                session, keys.tenant_id, domain.id, settings=runtime.settings, resolver=resolver
            )
        for finding in result.findings:
            style = LEVEL_STYLE[finding.level]
            out.print(f"{finding.level.upper():8}", style=style, end="")
            out.print(f"{finding.kind.upper():6}{finding.name}")
            out.print(f"        {finding.message}")
        out.print(f"{result.domain}: {result.level}", style=LEVEL_STYLE[result.level])
    if not result.passed:
        raise typer.Exit(1)


@domains_app.command("rotate")
def rotate(
    name: Domain,
    tenant: Tenant,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="The next keys' records are published: make them sign and retire the old ones.",
        ),
    ] = False,
) -> None:
    """Rotate the domain's DKIM keys: new keys under new selectors, to publish first.

    The next keys start signing when you run this again with --promote (after
    publishing their records and `carepost domains check`), or by themselves after
    CAREPOST_DOMAINS_KEY_PROMOTION_HOURS.
    """
    with open_runtime() as runtime:
        keys = _keys(runtime, tenant)
        with runtime.bound_session(keys) as session:
            domain = _find(session, keys, name)
            if promote:
                count = service.promote_next_keys(
                    session, keys.tenant_id, domain.id, actor=operator()
                )
                out.print(f"{count} keys promoted: they sign mail from {domain.name} from now on.")
                return
            created = service.rotate_keys(session, keys.tenant_id, domain.id, actor=operator())
            out.print(f"New keys: {', '.join(k.selector for k in created)}.")
            _print_records(session, runtime, domain)
