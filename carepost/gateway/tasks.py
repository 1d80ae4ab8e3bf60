"""The gateway's job for ``carepost worker``: retry inbound secure replies that the
listener could not hand to the organization's mail server at once."""

from __future__ import annotations

from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry
from carepost.gateway.replies import deliver_due_replies


def retry_inbound_replies(runtime: Runtime) -> int:
    return deliver_due_replies(runtime)


def register_jobs(registry: JobRegistry) -> None:
    registry.register(
        "gateway.inbound_replies",
        every_seconds=60,
        description="Deliver inbound secure replies whose delivery to the organization failed",
    )(retry_inbound_replies)
