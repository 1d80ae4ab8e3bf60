"""Gathers every domain's periodic jobs for ``carepost worker``.

Adding a domain's jobs is one line here: its ``tasks.register_jobs``.
"""

from __future__ import annotations

from carepost.accounts import tasks as accounts_tasks
from carepost.audit import tasks as audit_tasks
from carepost.core.worker import JobRegistry
from carepost.domains import tasks as domains_tasks
from carepost.gateway import tasks as gateway_tasks
from carepost.imports import tasks as imports_tasks
from carepost.messages import tasks as messages_tasks
from carepost.portal import tasks as portal_tasks
from carepost.webhooks import tasks as webhooks_tasks
from carepost.workflows import tasks as workflows_tasks


def all_jobs() -> JobRegistry:
    registry = JobRegistry()
    accounts_tasks.register_jobs(registry)
    audit_tasks.register_jobs(registry)
    imports_tasks.register_jobs(registry)
    webhooks_tasks.register_jobs(registry)
    domains_tasks.register_jobs(registry)
    messages_tasks.register_jobs(registry)
    workflows_tasks.register_jobs(registry)
    workflows_tasks.register_trigger_jobs(registry)
    portal_tasks.register_jobs(registry)
    gateway_tasks.register_jobs(registry)
    return registry
