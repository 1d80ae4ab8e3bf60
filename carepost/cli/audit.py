"""The audit trail: end-to-end verification and export."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.text import Text

from carepost.audit import query, schemas, verify
from carepost.audit import service as audit
from carepost.cli.common import err, find_tenant, open_runtime, operator, out
from carepost.core.errors import ValidationFailed

EXIT_AUDIT_DAMAGED = 1

audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[
        str | None,
        typer.Option(metavar="SLUG", help="Only this organization's chain (default: all chains)."),
    ] = None,
) -> None:
    """Check the audit trail's hash chains end to end; name every damaged event.

    Exit status 0: intact. 1: damaged (each problem printed). Record the head
    hashes printed somewhere outside carepost to detect a wholesale rewrite later.

    Example: carepost audit verify --tenant acme-health
    """
    with open_runtime() as runtime:
        chain = str(find_tenant(runtime, tenant).id) if tenant else None
        with runtime.database.session() as session:
            report = verify.verify_chains(session, chain=chain)
    for line in report.describe():
        out.print(line)
    if not report.ok:
        err.print(Text("audit trail damaged: see the problems above", style="bold red"))
        raise typer.Exit(EXIT_AUDIT_DAMAGED)
    out.print(Text("audit trail intact", style="green"))


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            "use an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T08:00:00Z",
            field=option,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@audit_app.command("export")
def audit_export(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization's slug.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", metavar="csv|jsonl", help="csv (spreadsheets) or jsonl (re-verifiable)."
        ),
    ] = "jsonl",
    since: Annotated[
        str | None, typer.Option(metavar="TIME", help="From this time (inclusive, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="TIME", help="Until this time (exclusive, UTC).")
    ] = None,
    action: Annotated[
        str | None, typer.Option(metavar="ACTION", help="Only this action, or a prefix: 'auth.*'.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option(metavar="ACTOR_ID", help="Only events by this actor id.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write to this file (mode 0600) instead of stdout."),
    ] = None,
) -> None:
    """Export an organization's audit events as CSV or JSON Lines, oldest first.

    The export itself is recorded in the trail (audit.export).

    Example: carepost audit export --tenant acme-health --format csv --output audit.csv
    """
    if fmt not in ("csv", "jsonl"):
        raise ValidationFailed("choose csv or jsonl", field="--format")
    export_format: schemas.ExportFormat = "csv" if fmt == "csv" else "jsonl"
    window = {"since": _instant(since, "--since"), "until": _instant(until, "--until")}
    try:
        filters = schemas.AuditFilters(**window, action=action, actor_id=actor)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "filters"
        raise ValidationFailed(first["msg"], field=where) from None
    with open_runtime() as runtime:
        found = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            audit.record(
                session,
                tenant_id=found.id,
                actor=operator(),
                action="audit.export",
                object_type="tenant",
                object_id=found.id,
                details={"format": fmt, "filters": filters.model_dump(mode="json")},
            )
        with runtime.database.session() as session:
            chunks = query.export_events(session, found.id, filters, export_format)
            if output is None:
                for chunk in chunks:
                    typer.echo(chunk, nl=False)
                return
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
            os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # also when the file existed before
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                for chunk in chunks:
                    handle.write(chunk)
    err.print(f"Wrote {output}.")
