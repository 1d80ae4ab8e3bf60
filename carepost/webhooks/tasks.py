"""Worker jobs of the webhooks domain: sending the queued deliveries."""

from __future__ import annotations

from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry
from carepost.webhooks.delivery import deliver_due


def deliver_webhooks(runtime: Runtime) -> int:
    return deliver_due(runtime)


def register_jobs(registry: JobRegistry) -> None:
    registry.register(
        "webhooks.deliver",
        every_seconds=2,
        description="Send due webhook deliveries (signed POSTs, retried with backoff)",
    )(deliver_webhooks)
