"""``carepost inbound serve``: the SMTP listener for bounces and complaints."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from carepost.cli.common import open_runtime, out


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
    """Receive bounces (DSNs) and complaints (ARF) for the bounce domain over SMTP.

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


inbound_app = typer.Typer(
    help="The inbound SMTP listener for bounces and complaints.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
inbound_app.command("serve")(serve)
