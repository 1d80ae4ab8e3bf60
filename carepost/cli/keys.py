"""Encryption keys: rotation without downtime, destruction of retired versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn

from carepost.cli.common import find_tenant, open_runtime, operator, out
from carepost.crypto import rotation

keys_app = typer.Typer(help="Rotate and destroy encryption keys.", no_args_is_help=True)


@contextmanager
def _progress_lines() -> Iterator[Callable[[str, int], None]]:
    """A progress callback: a live line per tenant and table on a terminal, else one
    line when each step starts (logs and pipes get no bar redraws)."""
    if not out.is_terminal:
        started: set[str] = set()

        def note_step(step: str, count: int) -> None:
            if step not in started:
                started.add(step)
                out.print(f"{step}: started")

        yield note_step
        return
    columns = (TextColumn("{task.description}: {task.completed}"), TimeElapsedColumn())
    with Progress(*columns, console=out) as progress:
        tasks: dict[str, TaskID] = {}

        def show_step(step: str, count: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=None)
            progress.update(tasks[step], completed=count)

        yield show_step


@keys_app.command("rotate")
def keys_rotate(
    tenant: Annotated[
        str | None, typer.Option(metavar="SLUG", help="Rotate only this organization's data key.")
    ] = None,
    master: Annotated[
        bool,
        typer.Option(
            "--master",
            help="Also add a new master key to the key file and re-wrap every tenant's keys.",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="ROWS", help="Rows per transaction.")
    ] = 500,
) -> None:
    """Re-encrypt data under new keys, without downtime (the service keeps running).

    Old key versions are retired (still readable); `carepost keys destroy-retired`
    deletes them once backups made with them have expired.

    Example: carepost keys rotate --tenant acme-health
    """
    with open_runtime() as runtime, _progress_lines() as on_progress:
        if tenant is not None:
            find_tenant(runtime, tenant)
        report = rotation.rotate_keys(
            runtime,
            tenant_slug=tenant,
            new_master_key=master,
            batch_size=batch_size,
            progress=on_progress,
            actor=operator(),
        )
    if report.master_key_id:
        out.print(
            f"New master key {report.master_key_id} is active; "
            f"{report.keys_rewrapped} tenant keys re-wrapped. Back up the key file now."
        )
    for item in report.tenants:
        tables = ", ".join(f"{name} {count}" for name, count in item.rows_by_table.items())
        retired = ", ".join(f"v{v}" for v in item.retired_versions) or "none"
        out.print(
            f"{item.tenant_slug}: data key v{item.old_version} -> v{item.new_version}, "
            f"{item.rows_reencrypted} rows re-encrypted ({tables or 'no encrypted tables'}), "
            f"retired {retired}, {item.seconds:.2f} s"
        )
    out.print(
        f"Done: {len(report.tenants)} organization(s), {report.rows_reencrypted} row(s) "
        "re-encrypted. Retired versions stay readable until `carepost keys destroy-retired`."
    )


@keys_app.command("destroy-retired")
def keys_destroy_retired(
    tenant: Annotated[
        str | None,
        typer.Option(metavar="SLUG", help="Only this organization (default: every one)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete retired data key versions for good (crypto-shredding).

    Refuses while any row still uses one. Backups sealed with them become unreadable.

    Example: carepost keys destroy-retired --tenant acme-health
    """
    if not yes:
        scope = f"of {tenant}" if tenant else "of every organization"
        typer.confirm(
            f"Destroy the retired keys {scope}? Old backups sealed with them become unreadable.",
            abort=True,
        )
    with open_runtime() as runtime:
        if tenant is not None:
            find_tenant(runtime, tenant)
        destroyed = rotation.destroy_retired_keys(runtime, tenant_slug=tenant, actor=operator())
    for item in destroyed:
        versions = ", ".join(f"v{v}" for v in item.versions) or "none"
        out.print(f"{item.tenant_slug}: destroyed key versions {versions}")
    if not destroyed:
        out.print("No retired keys to destroy.")


@keys_app.command("remove-master")
def keys_remove_master(
    key_id: Annotated[str, typer.Argument(help="The old master key's id (mk-...).")],
) -> None:
    """Drop an old master key from the key file once no tenant key uses it.

    Example: carepost keys remove-master mk-20260101120000-ab12
    """
    with open_runtime() as runtime:
        rotation.remove_master_key(runtime, key_id, actor=operator())
    out.print(f"Removed master key {key_id} from the key file. Back up the key file now.")
