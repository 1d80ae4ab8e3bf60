"""The workflow engine's job for ``carepost worker``."""

from __future__ import annotations

from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry
from carepost.workflows.engine import advance_due_runs


def advance_workflows(runtime: Runtime) -> int:
    return advance_due_runs(runtime)


def register_jobs(registry: JobRegistry) -> None:
    registry.register(
        "workflows.advance",
        every_seconds=1,
        description="Advance due workflow runs: wake engaged ones, claim, execute steps",
    )(advance_workflows)


def segment_entries(runtime: Runtime) -> int:
    from carepost.workflows.entry import run_periodic

    return run_periodic(runtime, "segment_entry")


def date_milestones(runtime: Runtime) -> int:
    from carepost.workflows.entry import run_periodic

    return run_periodic(runtime, "date_milestone")


def register_trigger_jobs(registry: JobRegistry) -> None:
    registry.register(
        "workflows.segment_entries",
        every_seconds=60,
        description="Enroll contacts who entered the segment of a segment-triggered workflow",
    )(segment_entries)
    registry.register(
        "workflows.date_milestones",
        every_seconds=3600,
        description="Enroll contacts whose date field milestone (birthday, N days before) is today",
    )(date_milestones)
