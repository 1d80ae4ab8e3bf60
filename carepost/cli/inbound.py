"""``carepost inbound``: the SMTP listener for bounces, complaints and secure replies
(``serve``), and an organization's inbound route for secure replies (``route-set``,
``route-show``, ``route-delete``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from carepost.cli.common import find_tenant, open_runtime, operator, out


def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="HOST", help="Address to listen on [default: CAREPOST_INBOUND_HOST]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            metavar="PORT",
            help="Port to listen on [default: CAREPOST_INBOUND_PORT, 2525]",
        ),
    ] = None,
) -> None:
    """Receive bounces (DSNs) and complaints (ARF) for the bounce domain, and secure
    replies for organizations with an inbound route, over SMTP.

    Point the bounce domain's MX (and your feedback-loop address) at this listener,
    usually through port 25 forwarded to it. Hard bounces and complaints suppress
    the address at once. Stop with SIGTERM or Ctrl-C.

    Example: carepost inbound serve --port 2525
    """
    from carepost.delivery.inbound import inbound_controller

    stop = threading.Event()
    with open_runtime() as runtime:
        controller = inbound_controller(runtime, host=host, port=port)
        controller.start()
        settings = runtime.settings
        out.print(
            f"carepost inbound listening on {controller.hostname}:{controller.port} "
            f"for mail to *@{settings.bounce_domain}. Stop with Ctrl-C."
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
    out.print("carepost inbound stopped.")


TenantOption = Annotated[str, typer.Option(metavar="SLUG", help="The organization.")]


def route_set(
    tenant: TenantOption,
    host: Annotated[str, typer.Option(help="The organization's mail server.")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 25,
    tls_mode: Annotated[
        str,
        typer.Option(help="verify (certificate checked against HOST) or encrypt (any)."),
    ] = "verify",
    ca_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="PEM CA to trust.")
    ] = None,
    disabled: Annotated[bool, typer.Option(help="Keep it, but refuse replies.")] = False,
) -> None:
    """Set where an organization's secure replies are delivered (STARTTLS required).

    Example: carepost inbound route-set --tenant clinic --host mail.clinic.example
    """
    from carepost.gateway import replies

    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            route = replies.set_route(
                session,
                organization.id,
                host=host,
                port=port,
                tls_mode=tls_mode,
                ca_certificate=ca_file.read_text() if ca_file else "",
                enabled=not disabled,
                actor=operator(),
            )
            state = "enabled" if route.enabled else "disabled"
            out.print(f"inbound route: {route.host}:{route.port} tls={route.tls_mode} {state}")


def route_show(tenant: TenantOption) -> None:
    """Show an organization's inbound route."""
    from carepost.gateway import replies

    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            route = replies.get_route(session, organization.id)
            if route is None:
                out.print("no inbound route: secure replies are refused.")
                return
            state = "enabled" if route.enabled else "disabled"
            out.print(f"inbound route: {route.host}:{route.port} tls={route.tls_mode} {state}")


def route_delete(tenant: TenantOption) -> None:
    """Remove an organization's inbound route: its secure replies are refused."""
    from carepost.gateway import replies

    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            found = replies.delete_route(session, organization.id, actor=operator())
    out.print("deleted." if found else "no inbound route.")


inbound_app = typer.Typer(
    help="The inbound SMTP listener for bounces, complaints and secure replies.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
inbound_app.command("serve")(serve)
inbound_app.command("route-set")(route_set)
inbound_app.command("route-show")(route_show)
inbound_app.command("route-delete")(route_delete)
