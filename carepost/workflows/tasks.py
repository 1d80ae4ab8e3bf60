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
