"""Running carepost: ``serve``, ``worker`` and ``migrate``."""

from __future__ import annotations

from typing import Annotated

import typer

import carepost
from carepost.cli.common import (
    load_cli_settings,
    open_runtime,
    out,
    prepare_and_migrate,
    report_migration,
)
from carepost.core import migrations
from carepost.core.database import Database
from carepost.core.worker import Worker


def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="HOST", help="Address to listen on [default: CAREPOST_HOST]"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, metavar="PORT", help="Port to listen on [default: CAREPOST_PORT]"
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, metavar="N", help="Web server processes (more need PostgreSQL).")
    ] = 1,
    migrate: Annotated[
        bool,
        typer.Option(
            help="Bring the database up to date before serving. On many machines, "
            "run `carepost migrate` once instead and pass --no-migrate."
        ),
    ] = True,
) -> None:
    """Serve the REST API and the web console.

    Example: carepost serve --port 8000
    """
    import uvicorn

    settings = load_cli_settings()
    if migrate:
        report_migration(settings, prepare_and_migrate(settings))
    bind_host = host or settings.host
    bind_port = port or settings.port
    out.print(
        f"carepost {carepost.__version__} listening on http://{bind_host}:{bind_port} "
        f"(public address: {settings.base_url}; console at /login, health at /healthz). "
        "Stop with Ctrl-C."
    )
    uvicorn.run(
        "carepost.api.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_config=None,  # carepost's structured logging stays in charge
        access_log=False,  # requests are logged by carepost, without their paths' ids
        server_header=False,
    )


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run every job once, print what each did, exit.")
    ] = False,
    job: Annotated[
        list[str] | None,
        typer.Option(
            "--job", metavar="JOB", help="Run only this job (repeat for more). Default: all."
        ),
    ] = None,
) -> None:
    """Run the background jobs (purging old sessions, anchoring the audit trail, ...).

    Runs until stopped (SIGTERM or Ctrl-C finishes the job in progress first).
    Run any number of workers against PostgreSQL; with SQLite, one is enough.

    Example: carepost worker --once
    """
    from carepost.jobs import all_jobs

    registry = all_jobs()
    if job:
        registry = registry.only(job)
    with open_runtime() as runtime:
        report = Worker(runtime, registry).run(once=once)
    if once:
        for outcome in report.outcomes:
            verdict = "FAILED (see the log)" if outcome.failed else f"{outcome.count} done"
            out.print(f"{outcome.job}: {verdict} in {outcome.duration_ms:.0f} ms")
        if report.failed:
            raise typer.Exit(1)


def migrate(
    revision: Annotated[
        str, typer.Option(metavar="REV", help="Upgrade to this revision instead of the newest.")
    ] = "head",
    down: Annotated[
        str | None,
        typer.Option(
            metavar="REV", help="Downgrade to this revision ('base' empties the database)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before a downgrade.")] = False,
) -> None:
    """Create ./var and the master key file if missing, then migrate the database.

    Safe to run any time: it does nothing when all is up to date. Upgrades are
    `carepost migrate` after installing the new version.

    Example: carepost migrate
    """
    settings = load_cli_settings()
    if down is None:
        report_migration(settings, prepare_and_migrate(settings, revision))
        return
    if not yes:
        typer.confirm(
            f"Downgrading to {down} drops the tables and data of later revisions. Continue?",
            abort=True,
        )
    database = Database(settings)
    try:
        migrations.downgrade(database.engine, down)
        now = migrations.current_revision(database.engine)
    finally:
        database.dispose()
    out.print(f"Database downgraded to {now or 'base (empty)'}.")
