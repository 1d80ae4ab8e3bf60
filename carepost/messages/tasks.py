"""Background jobs of the messages domain, run by ``carepost worker``.

``messages.deliver`` recovers expired leases, then claims and delivers due
messages in batches for up to ``outbox_deliver_budget_seconds`` (see
:mod:`carepost.messages.delivery`). ``messages.campaigns`` starts scheduled
campaigns and queues their recipients in batches (:mod:`carepost.messages.campaigns`).
Both are safe with any number of workers.
"""

from __future__ import annotations

from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry, PeriodicJob
from carepost.messages import campaigns
from carepost.messages.delivery import deliver_due_messages

DELIVER_EVERY_SECONDS = 1.0
CAMPAIGNS_EVERY_SECONDS = 5.0


def deliver_job(runtime: Runtime) -> int:
    run = deliver_due_messages(runtime)
    return run.claimed


def campaigns_job(runtime: Runtime) -> int:
    return campaigns.advance_campaigns(runtime)


def register_jobs(registry: JobRegistry) -> None:
    registry.add(
        PeriodicJob(
            "messages.deliver",
            DELIVER_EVERY_SECONDS,
            deliver_job,
            "claim due messages and deliver them over SMTP, recording each outcome",
        )
    )
    registry.add(
        PeriodicJob(
            "messages.campaigns",
            CAMPAIGNS_EVERY_SECONDS,
            campaigns_job,
            "start scheduled campaigns and queue their recipients in batches",
        )
    )
