"""``carepost contacts import``: import a CSV or FHIR file of contacts, resumably."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from carepost.cli.common import find_tenant, open_runtime, operator, out
from carepost.contacts import retokenize
from carepost.core.errors import ValidationFailed
from carepost.imports import local, service
from carepost.imports.mapping import parse_map_options
from carepost.imports.models import JobStatus
from carepost.imports.report import error_report_lines
from carepost.imports.runner import Progress as JobProgress

contacts_app = typer.Typer(
    help="Contacts: bulk imports.", no_args_is_help=True, rich_markup_mode=None
)


@contacts_app.command("import")
def import_contacts(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="The CSV file (UTF-8), or FHIR R4 Patients (NDJSON, Bundle) with --format fhir.",
        ),
    ],
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization.")],
    match: Annotated[
        str,
        typer.Option(
            metavar="KEY", help="Match rows to contacts on email, external_id, mrn or crm."
        ),
    ] = "email",
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="COLUMN=FIELD",
            help="Map a column to a field (repeat); COLUMN= ignores it. Columns named like "
            "a field map to it without this.",
        ),
    ] = None,
    date_format: Annotated[
        str, typer.Option(metavar="iso|us", help="Also read dates as MM/DD/YYYY with 'us'.")
    ] = "iso",
    format_: Annotated[
        str,
        typer.Option("--format", metavar="csv|fhir", help="What the file holds."),
    ] = "csv",
    fhir_options: Annotated[
        list[str] | None,
        typer.Option(
            "--fhir-option",
            metavar="NAME=VALUE",
            help="A FHIR mapping option (repeat): default_region=US, gender_field=gender, "
            "postal_code_field=zip, identifier_systems.<URI>=mrn (docs/fhir-import.md).",
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(metavar="JOB_ID", help="Go on with a job that stopped (same file)."),
    ] = None,
    errors: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH", help="Where to write the error report [default: FILE.errors.csv]."
        ),
    ] = None,
) -> None:
    """Import contacts from a CSV file, a batch of 5,000 rows per transaction.

    Rows that cannot be imported are reported by line, column and reason (never
    their values) in an error report CSV; the good rows are imported. If the
    import stops (Ctrl-C, a crash), run the command again with --resume JOB_ID:
    it goes on after the last committed batch, without duplicates.

    Example: carepost contacts import patients.csv --tenant demo --match mrn --map "Patient ID=mrn"

    Example: carepost contacts import Patient.ndjson --tenant demo --format fhir --match mrn
    --fhir-option identifier_systems.urn:oid:1.2.36.146.595.217.0.1=mrn
    """
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            keys = runtime.keyring.load(session, organization.id)
        if resume:
            try:
                job_id = uuid.UUID(resume)
            except ValueError:
                raise ValidationFailed("not a job id", field="--resume") from None
            local.resume_local_import(runtime, keys, job_id, file)
        else:
            mapping: dict[str, object]
            if format_ == "fhir":
                mapping = parse_fhir_options(fhir_options or [])
            else:
                mapping = {"columns": parse_map_options(map_ or [])}
                if date_format != "iso":
                    mapping["date_format"] = date_format
            job_id = local.start_local_import(
                runtime, keys, file, format=format_, mapping=mapping, match=match, actor=operator()
            )
        with runtime.bound_session(keys) as session:
            before = service.get_job(session, keys.tenant_id, job_id)
            base_rows, base_position = before.rows_read, before.position
        out.print(f"Import job {job_id} (resume it with --resume {job_id} if it stops).")
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
            TextColumn("{task.fields[errors]:,} errors"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=out, transient=False) as bar:
            task = bar.add_task(
                "importing",
                total=file.stat().st_size,
                completed=base_position,
                rows=base_rows,
                rate=0,
                errors=0,
            )

            def show(progress: JobProgress) -> None:
                elapsed = bar.tasks[0].elapsed or 0.0
                rate = (progress.rows_read - base_rows) / elapsed if elapsed else 0.0
                bar.update(
                    task,
                    completed=progress.position,
                    rows=progress.rows_read,
                    rate=rate,
                    errors=progress.errored,
                )

            try:
                result = local.run_local_import(runtime, keys, job_id, file, progress=show)
            except KeyboardInterrupt:
                out.print(f"Stopped. Resume with: --resume {job_id}")
                raise typer.Exit(130) from None
        with runtime.bound_session(keys) as session:
            job = service.get_job(session, keys.tenant_id, job_id)
            report = errors or file.with_name(file.name + ".errors.csv")
            if job.errored:
                with report.open("w", encoding="utf-8", newline="") as target:
                    for line in error_report_lines(
                        service.iter_errors(session, keys.tenant_id, job_id)
                    ):
                        target.write(line)
        out.print(
            f"{job.status}: {job.rows_read:,} rows read, {job.created:,} created, "
            f"{job.updated:,} updated, {job.unchanged:,} unchanged, {job.errored:,} with errors."
        )
        if job.failure:
            out.print(f"The file could not be imported: {job.failure}")
        if job.errored:
            out.print(
                f"Error report (line, column, reason): {report} "
                f"(also GET /api/v1/imports/{job_id}/errors.csv)"
            )
        if result.outcome != JobStatus.COMPLETED:
            raise typer.Exit(1)


def parse_fhir_options(options: list[str]) -> dict[str, object]:
    """``--fhir-option NAME=VALUE`` into a FHIR job's mapping (checked by the service)."""
    mapping: dict[str, object] = {}
    systems: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValidationFailed("write --fhir-option NAME=VALUE", field="--fhir-option")
        if name.startswith("identifier_systems."):
            systems[name.removeprefix("identifier_systems.")] = value
        elif name == "patient_id_as_external_id":
            mapping[name] = value.lower() in ("1", "true", "yes")
        else:
            mapping[name] = value or None
    if systems:
        mapping["identifier_systems"] = systems
    return mapping


@contacts_app.command("rebuild-tokens")
def rebuild_tokens(
    tenant: Annotated[str, typer.Option(metavar="SLUG", help="The organization.")],
) -> None:
    """Rebuild the segmentation tokens of every contact from the encrypted values.

    Needed once after an upgrade that changes how values are tokenized (see
    docs/contacts-data.md); safe to stop and run again.
    """
    with open_runtime() as runtime:
        organization = find_tenant(runtime, tenant)
        with runtime.database.session() as session:
            keys = runtime.keyring.load(session, organization.id)
        done = retokenize.rebuild_tokens(runtime, keys, actor=operator())
    out.print(f"Rebuilt the tokens of {done:,} contacts.")
