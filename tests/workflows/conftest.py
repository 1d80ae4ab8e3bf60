"""Fixtures of the workflow tests: a tenant with a template, contacts who consented to
marketing, and helpers to build, activate and advance workflows with a controlled clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.service import ConsentChange
from carepost.contacts import service as contacts
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.messages.models import Message
from carepost.templates import service as templates
from carepost.tenancy.models import Tenant
from carepost.workflows import engine, service, triggers
from carepost.workflows.models import WorkflowRun

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday


@dataclass
class Journey:
    """One tenant's workflow world: make contacts, a workflow, enroll, advance."""

    runtime: Runtime
    tenant: tuple[Tenant, TenantKeys]
    template_id: uuid.UUID
    workflows: list[uuid.UUID] = field(default_factory=list)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.tenant[0].id

    @property
    def keys(self) -> TenantKeys:
        return self.tenant[1]

    def session(self) -> Any:
        return self.runtime.bound_session(self.keys)

    def contact(
        self,
        *,
        consent_marketing: bool = True,
        language: str | None = None,
        timezone: str | None = None,
        custom: dict[str, Any] | None = None,
        **values: str,
    ) -> uuid.UUID:
        with self.session() as session:
            values.setdefault("email", f"p-{uuid.uuid4().hex[:8]}@example.org")
            row = contacts.create_contact(session, self.keys, values=values, actor=SYSTEM)
            row.language, row.timezone, row.custom = language, timezone, custom
            if consent_marketing:
                consent.record_consents(
                    session,
                    self.tenant_id,
                    contact_id=row.id,
                    changes=[ConsentChange("email", "marketing", "granted", "api")],
                    actor=SYSTEM,
                )
            return row.id

    def workflow(self, steps: list[dict[str, Any]], *, activate: bool = True) -> uuid.UUID:
        with self.session() as session:
            row = service.create_workflow(
                session,
                self.tenant_id,
                name=f"wf-{uuid.uuid4().hex[:8]}",
                sender_address="care@clinic.example",
                sender_name="The Clinic",
                draft={"steps": steps},
                actor=SYSTEM,
            )
            if activate:
                service.change_status(
                    session, self.tenant_id, row.id, "activate", actor=SYSTEM, now=T0
                )
            self.workflows.append(row.id)
            return row.id

    def enroll(self, workflow_id: uuid.UUID, contact_ids: list[uuid.UUID], now: datetime = T0):
        with self.session() as session:
            workflow = service.get_workflow(session, self.tenant_id, workflow_id)
            return triggers.enroll_contacts(session, workflow, contact_ids, source="api", now=now)

    def advance(self, now: datetime, **options: Any) -> int:
        return engine.advance_due_runs(self.runtime, now=now, tenant_id=self.tenant_id, **options)

    def run(self, workflow_id: uuid.UUID, contact_id: uuid.UUID) -> WorkflowRun:
        with self.session() as session:
            run = service.get_run(session, self.tenant_id, workflow_id, contact_id)
            session.expunge(run)
            return run

    def history(self, workflow_id: uuid.UUID, contact_id: uuid.UUID) -> list[tuple[str, str]]:
        with self.session() as session:
            run = service.get_run(session, self.tenant_id, workflow_id, contact_id)
            return [(row.step_id, row.outcome) for row in service.run_history(session, run)]

    def emails(self, contact_id: uuid.UUID | None = None) -> int:
        with self.runtime.database.session() as session:
            query = (
                select(func.count()).select_from(Message).where(Message.tenant_id == self.tenant_id)
            )
            if contact_id is not None:
                query = query.where(Message.contact_id == contact_id)
            return int(session.scalar(query) or 0)


@pytest.fixture
def make_journey(runtime: Runtime, make_tenant: Callable[..., Any]) -> Callable[[], Journey]:
    def make() -> Journey:
        tenant = make_tenant()
        with runtime.bound_session(tenant[1]) as session:
            template = templates.create_template(
                session,
                tenant[0].id,
                name=f"hello-{uuid.uuid4().hex[:8]}",
                kind="transactional",
                subject="A note from the clinic",
                html="<p>Hello. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
                text=None,
                actor=SYSTEM,
            )
        return Journey(runtime, tenant, template.id)

    return make


@pytest.fixture
def journey(make_journey: Callable[[], Journey]) -> Journey:
    return make_journey()
