"""Fixtures of the security suites: object factories for every kind of object a
route can address, each returning the path parameters and a way to read the
object back, so a suite can assert that a request changed nothing."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select

from carepost.accounts import apikeys, sessions
from carepost.accounts import service as accounts
from carepost.accounts.models import ApiKey, User
from carepost.accounts.permissions import PERMISSIONS
from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.models import ConsentRecord, Suppression
from carepost.contacts import custom_fields, events, lists, stages, upserts
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import ContactEvent, ContactList, ListMembership
from carepost.contacts.models import Contact, ContactToken, CustomField, JourneyStage
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.segments import service as segments
from carepost.segments.models import Segment, SegmentSnapshot
from carepost.tenancy.models import Tenant
from tests.canaries import PHI_CANARIES
from tests.conftest import new_password, phi_value, secret_value

TenantPair = tuple[Tenant, TenantKeys]


@dataclass
class Target:
    """One object of a tenant: the path parameters that address it, facts about it
    (its email, say) for checks, and a snapshot function that reads it back."""

    params: dict[str, str]
    snapshot: Callable[[], Any]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Objects:
    """Object factories bound to a runtime; each creates one object in a tenant."""

    runtime: Runtime

    def user(self, tenant: TenantPair, role: str = "analyst") -> Target:
        """A user with MFA enrolled and a live session: reset-mfa and sign-out
        would both visibly change it."""
        tenant_row, keys = tenant
        email = f"{role}-{uuid.uuid4().hex[:8]}@clinic.example"
        with self.runtime.bound_session(keys) as session:
            user, _ = accounts.create_user(
                session, tenant_id=tenant_row.id, email=email, role=role, password=new_password()
            )
            user.totp_secret = secret_value(pyotp.random_base32())
            user.totp_enabled = True
            token, _row = sessions.create_session(
                session, user=user, tenant=tenant_row, stage=sessions.STAGE_MFA_OK
            )
            secret_value(token)
            user_id = user.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(User, user_id)
                assert row is not None
                live = sessions.list_active_sessions(
                    session, tenant_id=tenant_row.id, user_id=user_id
                )
                return (
                    row.email,
                    row.name,
                    row.role,
                    row.status,
                    row.totp_enabled,
                    row.totp_secret,
                    row.password_hash,
                    len(live),
                )

        return Target({"user_id": str(user_id)}, snapshot, {"email": email})

    def api_key(self, tenant: TenantPair) -> Target:
        tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            key, secret = apikeys.create_api_key(
                session,
                tenant_id=tenant_row.id,
                name="integration",
                scopes=["contacts:read"],
                creator_permissions=frozenset(PERMISSIONS),
                actor=SYSTEM,
            )
            key_id = key.id
        secret_value(secret)

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(ApiKey, key_id)
                assert row is not None
                return (row.name, row.scopes, row.revoked_at, row.expires_at, row.secret_hash)

        return Target({"key_id": str(key_id)}, snapshot, {"secret": secret})

    def contact(self, tenant: TenantPair) -> Target:
        _tenant_row, keys = tenant
        email = f"{phi_value('mail').lower()}@example.org"
        values = {
            "email": email,
            "phone": "+14155550123",
            "external_id": phi_value("mrn"),
            "first_name": phi_value("first"),
            "last_name": phi_value("last"),
            "birth_date": "1958-02-03",
        }
        with self.runtime.bound_session(keys) as session:
            contact = contacts.create_contact(session, keys, values=values, actor=SYSTEM)
            contact_id = contact.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(Contact, contact_id)
                if row is None:
                    return None
                return (
                    row.email,
                    row.phone,
                    row.external_id,
                    row.first_name,
                    row.last_name,
                    row.birth_date,
                    row.email_index,
                    row.updated_at,
                )

        return Target({"contact_id": str(contact_id)}, snapshot, values)

    def duplicate_contacts(self, tenant: TenantPair) -> Target:
        """Two contacts of one person: the path names the survivor, ``duplicate_id`` the
        other; the snapshot covers both (a merge would delete the duplicate)."""
        survivor = self.contact(tenant)
        _tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            duplicate = contacts.create_contact(
                session,
                keys,
                values={"email": f"{phi_value('mail').lower()}@example.org"},
                actor=SYSTEM,
            )
            duplicate_id = duplicate.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(Contact, duplicate_id)
                duplicate = None if row is None else (row.email, row.updated_at)
            return survivor.snapshot(), duplicate

        facts = survivor.facts | {"duplicate_id": str(duplicate_id)}
        return Target(survivor.params, snapshot, facts)

    def contact_field(self, tenant: TenantPair) -> Target:
        """A multi-choice PHI field that a contact holds values of."""
        tenant_row, keys = tenant
        key = f"conditions_{uuid.uuid4().hex[:8]}"
        with self.runtime.bound_session(keys) as session:
            row = custom_fields.create_field(
                session,
                tenant_row.id,
                key=key,
                label="Conditions",
                type="multi_choice",
                choices=["e11", "i10"],
                actor=SYSTEM,
            )
            field_id = row.id
            upserts.upsert_contacts(
                session,
                keys,
                [{"email": f"{phi_value('mail').lower()}@example.org", "custom": {key: ["e11"]}}],
                match="email",
                actor=SYSTEM,
            )

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(CustomField, field_id)
                if found is None:
                    return None
                tokens = session.scalar(
                    select(func.count())
                    .select_from(ContactToken)
                    .where(ContactToken.tenant_id == tenant_row.id, ContactToken.field_key == key)
                )
                return (found.label, found.type, found.sealed, found.choices, tokens)

        return Target({"field_id": str(field_id)}, snapshot, {"key": key})

    def journey_stage(self, tenant: TenantPair) -> Target:
        """The organization's own journey stage, with a contact in it."""
        tenant_row, keys = tenant
        key = f"stage-{uuid.uuid4().hex[:8]}"
        with self.runtime.bound_session(keys) as session:
            stages.define_stage(session, tenant_row.id, key=key, label="Post-op", actor=SYSTEM)
            upserts.upsert_contacts(
                session,
                keys,
                [{"email": f"{phi_value('mail').lower()}@example.org", "journey_stage": key}],
                match="email",
                actor=SYSTEM,
            )

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                label = session.scalar(
                    select(JourneyStage.label).where(
                        JourneyStage.tenant_id == tenant_row.id, JourneyStage.key == key
                    )
                )
                members = session.scalar(
                    select(func.count())
                    .select_from(Contact)
                    .where(Contact.tenant_id == tenant_row.id, Contact.journey_stage == key)
                )
                return (label, members)

        # The key is the path parameter (echoed in a problem's ``instance``): no fact.
        return Target({"stage_key": key}, snapshot)

    def contact_list(self, tenant: TenantPair) -> Target:
        """A list with one current member; the snapshot covers its whole membership history."""
        member = self.contact(tenant)
        _tenant_row, keys = tenant
        name = f"list-{uuid.uuid4().hex[:8]}"
        member_id = uuid.UUID(member.params["contact_id"])
        with self.runtime.bound_session(keys) as session:
            row = lists.create_list(
                session, keys.tenant_id, name=name, description="", actor=SYSTEM
            )
            lists.change_members(
                session, keys.tenant_id, row.id, add=[member_id], remove=[], actor=SYSTEM
            )
            list_id = row.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(ContactList, list_id)
                if found is None:
                    return None
                stints = session.execute(
                    select(ListMembership.contact_id, ListMembership.left_at)
                    .where(ListMembership.list_id == list_id)
                    .order_by(ListMembership.id)
                ).all()
                return (found.name, found.description, found.updated_at, stints)

        facts = {"name": name, "member_id": str(member_id)}
        return Target({"list_id": str(list_id)}, snapshot, facts)

    def contact_with_events(self, tenant: TenantPair) -> Target:
        """A contact with one event whose properties are PHI."""
        contact = self.contact(tenant)
        _tenant_row, keys = tenant
        note = phi_value("event-note")
        contact_id = uuid.UUID(contact.params["contact_id"])
        with self.runtime.bound_session(keys) as session:
            [result] = events.record_events(
                session,
                keys,
                [
                    {
                        "contact_id": str(contact_id),
                        "kind": "appointment_kept",
                        "occurred_at": "2026-01-05T09:30:00+00:00",
                        "properties": {"note": note},
                    }
                ],
                actor=SYSTEM,
            )
            assert not result.errors

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                rows = session.execute(
                    select(ContactEvent.id, ContactEvent.sealed_properties)
                    .where(ContactEvent.contact_id == contact_id)
                    .order_by(ContactEvent.id)
                ).all()
            return contact.snapshot(), rows

        return Target(contact.params, snapshot, contact.facts | {"note": note})

    def consenting_contact(self, tenant: TenantPair) -> Target:
        """A contact with a marketing grant whose evidence is PHI; the snapshot covers
        the contact and its whole consent history."""
        contact = self.contact(tenant)
        _tenant_row, keys = tenant
        evidence = phi_value("evidence")
        contact_id = uuid.UUID(contact.params["contact_id"])
        with self.runtime.bound_session(keys) as session:
            consent.record_consent(
                session,
                keys.tenant_id,
                contact_id=contact_id,
                change=consent.ConsentChange("email", "marketing", "granted", "paper", evidence),
                actor=SYSTEM,
            )

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                records = session.scalars(
                    select(ConsentRecord)
                    .where(ConsentRecord.contact_id == contact_id)
                    .order_by(ConsentRecord.id)
                )
                history = [(r.id, r.status, r.evidence) for r in records]
            return contact.snapshot(), history

        return Target(contact.params, snapshot, contact.facts | {"evidence": evidence})

    def suppression(self, tenant: TenantPair) -> Target:
        """A manually suppressed address (any suppressions writer may lift it)."""
        _tenant_row, keys = tenant
        address = f"{phi_value('supp').lower()}@example.org"
        with self.runtime.bound_session(keys) as session:
            entry, _created = suppressions.add_suppression(
                session, keys, address=address, reason="manual", source="api", actor=SYSTEM
            )
            entry_id = entry.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(Suppression, entry_id)
                return None if row is None else (row.address, row.reason, row.scope)

        return Target({"suppression_id": str(entry_id)}, snapshot, {"address": address})

    def segment(self, tenant: TenantPair) -> Target:
        """A saved segment over a list with one member; the snapshot covers the
        segment, its snapshots and their frozen members."""
        contact_list = self.contact_list(tenant)
        _tenant_row, keys = tenant
        name = f"segment-{uuid.uuid4().hex[:8]}"
        rule = {
            "all": [{"list": contact_list.params["list_id"]}, {"field": "email", "op": "is_set"}]
        }
        with self.runtime.bound_session(keys) as session:
            row = segments.create_segment(
                session, keys.tenant_id, name=name, description="", rule=rule, actor=SYSTEM
            )
            segment_id = row.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(Segment, segment_id)
                if found is None:
                    return None
                frozen = session.execute(
                    select(SegmentSnapshot.id, SegmentSnapshot.member_count)
                    .where(SegmentSnapshot.segment_id == segment_id)
                    .order_by(SegmentSnapshot.id)
                ).all()
                return (found.name, found.description, found.rule, found.updated_at, frozen)

        facts = {"name": name, "list_id": contact_list.params["list_id"]}
        return Target({"segment_id": str(segment_id)}, snapshot, facts)

    def segment_snapshot(self, tenant: TenantPair) -> Target:
        """A snapshot (one frozen member) of a saved segment."""
        segment = self.segment(tenant)
        _tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            snapshot_id = segments.snapshot_segment(
                session, keys, uuid.UUID(segment.params["segment_id"]), reason="test send"
            )
        params = segment.params | {"snapshot_id": str(snapshot_id)}
        return Target(params, segment.snapshot, segment.facts)

    def template_layout(self, tenant: TenantPair) -> Target:
        """An email layout (no template uses it, so it can be deleted)."""
        from carepost.templates import service as templates
        from carepost.templates.models import Layout

        _tenant_row, keys = tenant
        name = f"layout-{uuid.uuid4().hex[:8]}"
        with self.runtime.bound_session(keys) as session:
            html = "<b>{{ content }}</b>"
            row = templates.create_layout(
                session, keys.tenant_id, name=name, html=html, text=None, actor=SYSTEM
            )
            layout_id = row.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(Layout, layout_id)
                return None if found is None else (found.name, found.html, found.updated_at)

        return Target({"layout_id": str(layout_id)}, snapshot, {"name": name})

    def template(self, tenant: TenantPair) -> Target:
        """A transactional template with one A/B variant; the snapshot covers the
        template, its versions and its variants."""
        from carepost.templates import service as templates
        from carepost.templates.models import Template, TemplateVariant, TemplateVersion

        _tenant_row, keys = tenant
        name = f"template-{uuid.uuid4().hex[:8]}"
        with self.runtime.bound_session(keys) as session:
            row = templates.create_template(
                session,
                keys.tenant_id,
                name=name,
                kind="transactional",
                subject="Hello {{ contact.first_name | default('there') }}",
                html="<p>Your appointment is confirmed.</p>",
                text=None,
                actor=SYSTEM,
            )
            arm = {"key": "b", "subject": "Hi", "percent": 50}
            variant = templates.create_variant(
                session, keys.tenant_id, row.id, values=arm, actor=SYSTEM
            )
            template_id, variant_id = row.id, variant.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(Template, template_id)
                if found is None:
                    return None
                versions = session.scalar(
                    select(func.count())
                    .select_from(TemplateVersion)
                    .where(TemplateVersion.template_id == template_id)
                )
                arms = session.execute(
                    select(TemplateVariant.key, TemplateVariant.subject, TemplateVariant.percent)
                    .where(TemplateVariant.template_id == template_id)
                    .order_by(TemplateVariant.key)
                ).all()
                return (found.name, found.subject, found.html, found.version, versions, arms)

        params = {"template_id": str(template_id), "variant_id": str(variant_id)}
        return Target(params, snapshot, {"name": name})

    def audit_event(self, tenant: TenantPair) -> Target:
        """The newest event of the tenant's audit trail (events are immutable)."""
        with self.runtime.database.session() as session:
            event = session.scalars(
                select(AuditEvent)
                .where(AuditEvent.tenant_id == tenant[0].id)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).one()
            event_id, event_hash = event.id, event.hash

        def snapshot() -> Any:
            with self.runtime.database.session() as session:
                row = session.get(AuditEvent, event_id)
                return None if row is None else row.hash

        return Target({"event_id": str(event_id)}, snapshot, {"hash": event_hash})

    def import_job(self, tenant: TenantPair) -> Target:
        """A queued CSV import with its uploaded file (one sealed chunk) and one row
        error; the snapshot covers its state, its chunks and its errors."""
        from carepost.imports import service as imports
        from carepost.imports.models import ImportChunk, ImportJob, ImportRowError

        tenant_row, keys = tenant
        email = f"{phi_value('mail').lower()}@example.org"
        with self.runtime.bound_session(keys) as session:
            job = imports.create_job(
                session, tenant_row.id, format="csv", mapping={}, match="email", actor=SYSTEM
            )
            body = f"email\n{email}\nnot-an-email\n".encode()
            session.add(
                ImportChunk(
                    tenant_id=tenant_row.id, job_id=job.id, seq=0, size=len(body), data=body
                )
            )
            session.add(
                ImportRowError(
                    tenant_id=tenant_row.id,
                    job_id=job.id,
                    line=3,
                    column="email",
                    reason="not a valid email address",
                )
            )
            imports.queue_upload(session, job, file_size=len(body), actor=SYSTEM)
            job_id = job.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(ImportJob, job_id)
                if found is None:
                    return None
                chunks = session.scalar(
                    select(func.count())
                    .select_from(ImportChunk)
                    .where(ImportChunk.job_id == job_id)
                )
                errors = session.scalar(
                    select(func.count())
                    .select_from(ImportRowError)
                    .where(ImportRowError.job_id == job_id)
                )
                return (found.status, found.position, found.rows_read, chunks, errors)

        return Target({"job_id": str(job_id)}, snapshot, {"email": email})

    def webhook_endpoint(self, tenant: TenantPair) -> Target:
        """A webhook endpoint that includes PHI, with one delivered event in its log;
        the snapshot covers the endpoint (and its secret) and its deliveries."""
        from carepost.webhooks import service as webhooks
        from carepost.webhooks.models import WebhookDelivery, WebhookEndpoint

        tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            created = webhooks.create_endpoint(
                session,
                tenant_row.id,
                url="https://hooks.example.org/carepost",
                event_types=["message.bounced"],
                include_phi=True,
                actor=SYSTEM,
            )
            endpoint_id = created.endpoint.id
            webhooks.emit(
                session,
                tenant_row.id,
                "message.bounced",
                {"message_id": str(uuid.uuid4()), "to": f"{phi_value('mail').lower()}@x.org"},
            )
            delivery_id = session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
            ).one()
        secret_value(created.secret)

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(WebhookEndpoint, endpoint_id)
                if row is None:
                    return None
                deliveries = session.execute(
                    select(WebhookDelivery.id, WebhookDelivery.state, WebhookDelivery.attempts)
                    .where(WebhookDelivery.endpoint_id == endpoint_id)
                    .order_by(WebhookDelivery.id)
                ).all()
                return (row.url, row.event_types, row.enabled, row.secret, deliveries)

        params = {"endpoint_id": str(endpoint_id), "delivery_id": str(delivery_id)}
        return Target(params, snapshot, {"secret": created.secret})

    def sending_domain(self, tenant: TenantPair, *, rotated: bool = False) -> Target:
        """A sending domain with its two DKIM keys (and two next keys when ``rotated``);
        the snapshot covers its state, its last check and its keys' selectors and states."""
        from carepost.core.errors import NotFound
        from carepost.domains import service as domains

        tenant_row, keys = tenant
        name = f"d-{uuid.uuid4().hex[:8]}.example"
        with self.runtime.bound_session(keys) as session:
            domain = domains.add_domain(session, tenant_row.id, name=name, actor=SYSTEM)
            domain_id = domain.id
            if rotated:
                domains.rotate_keys(session, tenant_row.id, domain_id, actor=SYSTEM)

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                try:
                    found = domains.get_domain(session, tenant_row.id, domain_id)
                except NotFound:
                    return None
                key_states = [
                    (k.selector, k.state)
                    for k in domains.domain_keys(session, tenant_row.id, domain_id)
                ]
                return (found.name, found.state, found.last_checked_at, key_states)

        return Target({"domain_id": str(domain_id)}, snapshot, {"name": name})

    def gateway_client(self, tenant: TenantPair) -> Target:
        """An SMTP gateway client of the tenant; the snapshot covers its name, domains,
        networks and credential hash."""
        from carepost.core.errors import NotFound
        from carepost.gateway import service as gateway

        tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            client, secret = gateway.create_client(
                session,
                tenant_row.id,
                name="Exchange connector",
                sender_domains=["clinic.example"],
                networks=["192.0.2.0/24"],
                max_message_bytes=1024 * 1024,
                max_recipients=10,
                actor=SYSTEM,
            )
            client_id, username = client.id, client.username
        secret_value(secret)

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                try:
                    row = gateway.get_client(session, tenant_row.id, client_id)
                except NotFound:
                    return None
                return (row.name, row.sender_domains, row.networks, row.secret_hash, row.enabled)

        return Target({"client_id": str(client_id)}, snapshot, {"username": username})

    def dlp_rule(self, tenant: TenantPair) -> Target:
        """A keyword dictionary whose terms are PHI canaries; the snapshot covers its
        name, terms and settings."""
        from carepost.core.errors import NotFound
        from carepost.dlp import service as dlp

        tenant_row, keys = tenant
        name = f"dict-{uuid.uuid4().hex[:8]}"
        term = phi_value("term")
        with self.runtime.bound_session(keys) as session:
            rule_id = dlp.create_rule(
                session, tenant_row.id, name=name, kind="dictionary", terms=[term], actor=SYSTEM
            ).id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                try:
                    rule = dlp.get_rule(session, tenant_row.id, rule_id)
                except NotFound:
                    return None
                return (rule.name, rule.terms, rule.severity, rule.phi)

        return Target({"rule_id": str(rule_id)}, snapshot, {"name": name, "term": term})

    def recipient_key(self, tenant: TenantPair) -> Target:
        """A recipient's S/MIME certificate in the key directory (end-to-end
        encryption); the snapshot covers its fingerprint and revocation."""
        from carepost.core.errors import NotFound
        from carepost.e2ee import directory
        from tests.e2ee.e2ee_pki import TestCA

        tenant_row, keys = tenant
        address = f"{phi_value('keyholder').lower()}@patient.example"
        PHI_CANARIES.add(address)
        issued = TestCA().issue(address)
        with self.runtime.bound_session(keys) as session:
            row = directory.add_key(
                session,
                tenant_row.id,
                address=address,
                material=issued.cert_pem,
                source="upload",
                actor=SYSTEM,
            )
            key_id = row.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                try:
                    found = directory.get_key(session, tenant_row.id, key_id)
                except NotFound:
                    return None
                return (found.fingerprint, found.revoked, found.seen_at)

        facts = {"address": address, "certificate": issued.cert_pem.decode()}
        return Target({"key_id": str(key_id)}, snapshot, facts)

    def portal_item(self, tenant: TenantPair) -> Target:
        """A PHI message handed to the secure portal (carepost/portal); the snapshot
        covers its state, content, replies and access events."""
        from carepost.core.database import utcnow
        from carepost.messages.models import Message
        from carepost.portal.handoff import hand_to_portal
        from carepost.portal.models import PortalEvent, PortalItem

        message = self.message(tenant)
        _tenant_row, keys = tenant
        with self.runtime.bound_session(keys) as session:
            row = session.get(Message, uuid.UUID(message.params["message_id"]))
            assert row is not None
            item_id = hand_to_portal(session, row, reasons=["dlp:test"], now=utcnow())

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                item = session.get(PortalItem, item_id)
                if item is None:
                    return None
                events = session.scalar(
                    select(func.count())
                    .select_from(PortalEvent)
                    .where(PortalEvent.item_id == item_id)
                )
                return (item.state, item.content, item.recalled_at, events)

        return Target({"portal_item_id": str(item_id)}, snapshot, message.facts)

    def rotated_domain(self, tenant: TenantPair) -> Target:
        """A sending domain whose rotation waits for promotion."""
        return self.sending_domain(tenant, rotated=True)

    def message(self, tenant: TenantPair) -> Target:
        """A queued message to a contact, with a PHI subject; the snapshot covers its
        state and content and its events."""
        from carepost.messages.models import Message, MessageEvent
        from carepost.messages.schemas import MessageIn
        from carepost.messages.sending import SendContext, SendLimits, send_messages

        contact = self.contact(tenant)
        _tenant_row, keys = tenant
        subject = f"Results for {phi_value('subject')}"
        request = MessageIn.model_validate(
            {
                "contact_id": contact.params["contact_id"],
                "from": "care@clinic.example",
                "subject": subject,
                "text": "Your results are ready.",
                "tags": ["lab"],
            }
        )
        with self.runtime.bound_session(keys) as session:
            [result] = send_messages(
                session,
                keys,
                [(request, None)],
                SendContext(SYSTEM, SendLimits(1024, "https://testserver")),
            )
        message_id = result.id
        assert message_id is not None

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                row = session.get(Message, message_id)
                if row is None:
                    return None
                events = session.scalar(
                    select(func.count())
                    .select_from(MessageEvent)
                    .where(MessageEvent.message_id == message_id)
                )
                return (row.state, row.subject, row.to_address, row.attempts, events)

        facts = {"to": contact.facts["email"], "subject": subject}
        return Target({"message_id": str(message_id)}, snapshot, facts)

    def campaign(self, tenant: TenantPair, state: str = "draft") -> Target:
        """A campaign to a list (a draft, or scheduled for later, or paused)."""
        from datetime import timedelta

        from carepost.core.database import utcnow
        from carepost.messages import campaigns
        from carepost.messages.models import Campaign
        from carepost.messages.schemas import CampaignIn

        contact_list = self.contact_list(tenant)
        _tenant_row, keys = tenant
        name = f"campaign-{uuid.uuid4().hex[:8]}"
        body = CampaignIn.model_validate(
            {
                "name": name,
                "list_id": contact_list.params["list_id"],
                "from": "news@clinic.example",
                "subject": "Flu shots",
                "text": "Book now.",
            }
        )
        with self.runtime.bound_session(keys) as session:
            row = campaigns.create_campaign(session, keys, body, actor=SYSTEM)
            if state in ("scheduled", "paused"):
                later = utcnow() + timedelta(days=1)
                campaigns.schedule_campaign(session, keys, row.id, later, actor=SYSTEM)
            if state == "paused":
                campaigns.pause_campaign(session, keys, row.id, actor=SYSTEM)
            campaign_id = row.id

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(Campaign, campaign_id)
                if found is None:
                    return None
                return (
                    found.name,
                    found.state,
                    found.scheduled_at,
                    found.subject,
                    found.updated_at,
                )

        facts = {"name": name, "list_id": contact_list.params["list_id"]}
        return Target({"campaign_id": str(campaign_id)}, snapshot, facts)

    def scheduled_campaign(self, tenant: TenantPair) -> Target:
        return self.campaign(tenant, "scheduled")

    def paused_campaign(self, tenant: TenantPair) -> Target:
        return self.campaign(tenant, "paused")

    def workflow(self, tenant: TenantPair, status: str = "draft") -> Target:
        """A workflow (a draft, active, or paused) waiting a day between two steps; an
        active or paused one has one contact enrolled (``contact_id``)."""
        from sqlalchemy import select as select_rows

        from carepost.workflows import service as workflows
        from carepost.workflows import triggers
        from carepost.workflows.models import Workflow, WorkflowRun

        tenant_row, keys = tenant
        name = f"journey-{uuid.uuid4().hex[:8]}"
        steps = [
            {"id": "wait", "type": "wait_duration", "duration": {"days": 1}, "next": "end"},
            {"id": "end", "type": "exit"},
        ]
        params: dict[str, str] = {}
        with self.runtime.bound_session(keys) as session:
            row = workflows.create_workflow(
                session,
                tenant_row.id,
                name=name,
                sender_address="care@clinic.example",
                draft={"steps": steps},
                actor=SYSTEM,
            )
            workflow_id = row.id
            params["workflow_id"] = str(workflow_id)
        if status != "draft":
            person = self.contact(tenant).params["contact_id"]
            with self.runtime.bound_session(keys) as session:
                workflows.change_status(
                    session, tenant_row.id, workflow_id, "activate", actor=SYSTEM
                )
                row = workflows.get_workflow(session, tenant_row.id, workflow_id)
                triggers.enroll_contacts(session, row, [uuid.UUID(person)], source="api")
                if status == "paused":
                    workflows.change_status(
                        session, tenant_row.id, workflow_id, "pause", actor=SYSTEM
                    )
            params["contact_id"] = person

        def snapshot() -> Any:
            with self.runtime.bound_session(keys) as session:
                found = session.get(Workflow, workflow_id)
                if found is None:
                    return None
                runs = session.execute(
                    select_rows(WorkflowRun.contact_id, WorkflowRun.status).where(
                        WorkflowRun.workflow_id == workflow_id
                    )
                ).all()
                return (found.name, found.status, found.current_version, found.draft, sorted(runs))

        return Target(params, snapshot, {"name": name})

    def active_workflow(self, tenant: TenantPair) -> Target:
        return self.workflow(tenant, "active")

    def paused_workflow(self, tenant: TenantPair) -> Target:
        return self.workflow(tenant, "paused")

    def audit_count(self, tenant: TenantPair) -> int:
        with self.runtime.database.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.tenant_id == tenant[0].id)
                )
                or 0
            )


@pytest.fixture
def objects(runtime: Runtime) -> Objects:
    return Objects(runtime)


def random_id() -> str:
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
