"""``carepost gateway``: the SMTP gateway (``serve``) and its clients (``add``,
``list``, ``update``, ``rotate-secret``, ``delete``)."""

from __future__ import annotations

import signal
import threading
import uuid
from typing import Annotated

import typer
from rich.table import Table

from carepost.cli.common import find_tenant, open_runtime, operator, out
from carepost.gateway import service

gateway_app = typer.Typer(
    help="The SMTP gateway customers' mail servers relay through (docs/gateway.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
TenantOption = Annotated[str, typer.Option(metavar="SLUG", help="The organization.")]


@gateway_app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="HOST", help="Address to listen on [default: CAREPOST_GATEWAY_HOST]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, metavar="PORT", help="Port [default: CAREPOST_GATEWAY_PORT, 2587]"
        ),
    ] = None,
) -> None:
    """Relay customers' outbound mail (STARTTLS required; clients by AUTH, certificate
    or network). Needs CAREPOST_GATEWAY_TLS_CERT_FILE and _KEY_FILE. Stop with Ctrl-C.

    Example: carepost gateway serve --port 2587
    """
    from carepost.gateway.server import gateway_controller

    stop = threading.Event()
    with open_runtime() as runtime:
        controller = gateway_controller(runtime, host=host, port=port)
        controller.start()
        out.print(
            f"carepost gateway listening on {controller.hostname}:{controller.port}. "
            "Stop with Ctrl-C."
        )
        previous = {
            signum: signal.signal(signum, lambda *_: stop.set())
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            stop.wait()
        finally:
            controller.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    out.print("carepost gateway stopped.")


@gateway_app.command("add")
def add(
    tenant: TenantOption,
    name: Annotated[str, typer.Option(help="A name for the client, like 'Exchange Online'.")],
    domain: Annotated[
        list[str], typer.Option(help="A verified sending domain it may relay for (repeat).")
    ],
    network: Annotated[
        list[str] | None, typer.Option(help="A CIDR network it connects from (repeat).")
    ] = None,
    fingerprint: Annotated[
        list[str] | None,
        typer.Option(help="SHA-256 fingerprint of its TLS client certificate (repeat)."),
    ] = None,
    max_message_bytes: Annotated[int, typer.Option(min=1024)] = 25 * 1024 * 1024,
    max_recipients: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Add a gateway client; prints its SMTP AUTH username and secret (shown once)."""
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            client, secret = service.create_client(
                session,
                organization.id,
                name=name,
                sender_domains=domain,
                networks=network or [],
                cert_fingerprints=fingerprint or [],
                max_message_bytes=max_message_bytes,
                max_recipients=max_recipients,
                actor=operator(),
            )
            out.print(f"client {client.id}")
            out.print(f"username: {client.username}")
            out.print(f"secret:   {secret}   (shown once: store it in the mail server now)")


@gateway_app.command("list")
def list_clients(tenant: TenantOption) -> None:
    """The organization's gateway clients."""
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            table = Table("id", "name", "username", "domains", "networks", "certificates")
            for row in service.list_clients(session, organization.id):
                table.add_row(
                    str(row.id),
                    row.name,
                    row.username,
                    ", ".join(row.sender_domains),
                    ", ".join(row.networks),
                    str(len(row.cert_fingerprints)),
                )
            out.print(table)


@gateway_app.command("update")
def update(
    tenant: TenantOption,
    client_id: Annotated[uuid.UUID, typer.Argument()],
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(help="Sender domain (repeat): the list given replaces the old one."),
    ] = None,
    network: Annotated[
        list[str] | None,
        typer.Option(help="CIDR network (repeat): the list given replaces the old one."),
    ] = None,
    no_networks: Annotated[bool, typer.Option(help="Remove every source network.")] = False,
    fingerprint: Annotated[
        list[str] | None,
        typer.Option(help="Certificate fingerprint (repeat): replaces the old list."),
    ] = None,
    no_fingerprints: Annotated[
        bool, typer.Option(help="Remove every certificate fingerprint.")
    ] = False,
    max_message_bytes: Annotated[int | None, typer.Option(min=1024)] = None,
    max_recipients: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
) -> None:
    """Change a gateway client; what is not given stays as it is.

    Example: carepost gateway update --tenant clinic CLIENT_ID --network 40.92.0.0/15
    """
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            service.update_client(
                session,
                organization.id,
                client_id,
                actor=operator(),
                name=name,
                sender_domains=domain or None,
                networks=[] if no_networks else (network or None),
                cert_fingerprints=[] if no_fingerprints else (fingerprint or None),
                max_message_bytes=max_message_bytes,
                max_recipients=max_recipients,
            )
            out.print("updated.")


@gateway_app.command("rotate-secret")
def rotate_secret(tenant: TenantOption, client_id: Annotated[uuid.UUID, typer.Argument()]) -> None:
    """Give a client a new SMTP AUTH secret (printed once); the old one stops working."""
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            client, secret = service.rotate_secret(
                session, organization.id, client_id, actor=operator()
            )
            out.print(f"username: {client.username}")
            out.print(f"secret:   {secret}   (shown once: store it in the mail server now)")


@gateway_app.command("delete")
def delete(tenant: TenantOption, client_id: Annotated[uuid.UUID, typer.Argument()]) -> None:
    """Delete a gateway client: it can relay no more."""
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            service.delete_client(session, organization.id, client_id, actor=operator())
            out.print("deleted.")
