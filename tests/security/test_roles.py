"""The role permissions matrix: who may call which route, and the rules roles cannot bend.

``MATRIX`` is the specification, written out by hand: for each API route, the
roles allowed to call it. Each role is tried as a console session of a user with
that role and as an API key whose scopes are exactly the role's permissions;
allowed calls succeed, denied ones get 403 problem+json. A new route without a
row fails ``test_matrix_covers_every_api_route``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from carepost.accounts import apikeys
from carepost.accounts import service as accounts
from carepost.accounts.permissions import PERMISSIONS, ROLE_PERMISSIONS, Role
from carepost.audit.service import Actor
from carepost.core.errors import Conflict, PermissionDenied
from tests.conftest import new_password, secret_value
from tests.security.conftest import Objects, Target, TenantPair
from tests.security.route_inventory import RouteKey, app_routes

V1 = "/api/v1"
ALL = frozenset(Role)
OWNER, ADMIN, MARKETER, ANALYST, AUDITOR = (
    Role.OWNER,
    Role.ADMIN,
    Role.MARKETER,
    Role.ANALYST,
    Role.AUDITOR,
)
MANAGERS = frozenset({OWNER, ADMIN})
CONTACT_READERS = frozenset({OWNER, ADMIN, MARKETER, ANALYST})
CONTACT_WRITERS = frozenset({OWNER, ADMIN, MARKETER})
PEOPLE_READERS = frozenset({OWNER, ADMIN, AUDITOR})
AUDIT_READERS = frozenset({OWNER, ADMIN, AUDITOR})
CONSENT_READERS = frozenset({OWNER, ADMIN, MARKETER, ANALYST, AUDITOR})
CONSENT_WRITERS = frozenset({OWNER, ADMIN, MARKETER})
SUPPRESSION_USERS = frozenset({OWNER, ADMIN, MARKETER})
# Previews are POSTs, and auditors never post: they read templates through the audit trail.
TEMPLATE_READERS = frozenset({OWNER, ADMIN, MARKETER, ANALYST})
TEMPLATE_WRITERS = frozenset({OWNER, ADMIN, MARKETER})
WEBHOOK_READERS = frozenset({OWNER, ADMIN, AUDITOR})
SENDERS = frozenset({OWNER, ADMIN, MARKETER})
REPORT_READERS = ALL
POLICY_READERS = frozenset({OWNER, ADMIN, AUDITOR})
DLP_SCANNERS = frozenset({OWNER, ADMIN, MARKETER})


@dataclass(frozen=True)
class Call:
    """How to make one valid call to a route: the factory of the object it addresses
    (if any) and a body builder (fresh values each call, so creates don't collide)."""

    factory: str | None = None
    body: Callable[[], dict[str, Any]] | None = None
    files: Callable[[], dict[str, Any]] | None = None  # a multipart upload instead of JSON
    # A body naming other objects the factory made (from the target's facts).
    body_of: Callable[[Target], dict[str, Any]] | None = None


def _new_user_body() -> dict[str, Any]:
    return {"email": f"new-{uuid.uuid4().hex[:8]}@clinic.example", "role": "analyst"}


def _new_contact_body() -> dict[str, Any]:
    return {"external_id": f"mrn-{uuid.uuid4().hex[:10]}"}


def _new_field_body() -> dict[str, Any]:
    return {"key": f"f_{uuid.uuid4().hex[:10]}", "label": "Field", "type": "string"}


def _new_stage_body() -> dict[str, Any]:
    return {"key": f"stage-{uuid.uuid4().hex[:10]}", "label": "Stage"}


def _new_address() -> str:
    return f"r-{uuid.uuid4().hex[:10]}@example.org"


def _suppression_csv() -> dict[str, Any]:
    return {"file": ("list.csv", f"address\n{_new_address()}\n".encode(), "text/csv")}


def _import_csv() -> dict[str, Any]:
    # The options before the file, as the streamed upload wants them.
    return {
        "match": (None, "email"),
        "file": ("people.csv", f"email\n{_new_address()}\n".encode(), "text/csv"),
    }


def _new_event_body() -> dict[str, Any]:
    return {
        "items": [
            {
                "contact_id": str(uuid.uuid4()),
                "kind": "portal_login",
                "occurred_at": "2026-01-05T10:00:00Z",
            }
        ]
    }


def _new_message_body() -> dict[str, Any]:
    return {"to": _new_address(), "from": "care@clinic.example", "subject": "Hi", "text": "x"}


def _new_workflow_body() -> dict[str, Any]:
    return {
        "name": f"journey-{uuid.uuid4().hex[:8]}",
        "sender_address": "care@clinic.example",
        "draft": {"steps": [{"id": "end", "type": "exit"}]},
    }


def _new_campaign_body(target: Target) -> dict[str, Any]:
    return {
        "name": f"campaign-{uuid.uuid4().hex[:8]}",
        "list_id": target.params["list_id"],
        "from": "news@clinic.example",
        "subject": "News",
        "text": "x",
    }


EMAIL_SET = {"field": "email", "op": "is_set"}


def _new_segment_body() -> dict[str, Any]:
    return {"name": f"segment-{uuid.uuid4().hex[:8]}", "rule": EMAIL_SET}


def _new_template_body() -> dict[str, Any]:
    return {"name": f"template-{uuid.uuid4().hex[:8]}", "subject": "Hi", "text": "Hello"}


def _new_layout_body() -> dict[str, Any]:
    return {"name": f"layout-{uuid.uuid4().hex[:8]}", "html": "<b>{{ content }}</b>"}


MATRIX: dict[RouteKey, tuple[frozenset[Role], Call]] = {
    RouteKey("GET", f"{V1}/templates"): (TEMPLATE_READERS, Call()),
    RouteKey("POST", f"{V1}/templates"): (TEMPLATE_WRITERS, Call(body=_new_template_body)),
    # A draft preview with the built-in sample contact: no PHI, any template reader.
    RouteKey("POST", f"{V1}/templates/preview"): (
        TEMPLATE_READERS,
        Call(body=lambda: {"subject": "Hi {{ contact.first_name }}", "text": "Hello"}),
    ),
    RouteKey("GET", f"{V1}/templates/{{template_id}}"): (TEMPLATE_READERS, Call("template")),
    RouteKey("PATCH", f"{V1}/templates/{{template_id}}"): (
        TEMPLATE_WRITERS,
        Call("template", lambda: {"subject": "Changed"}),
    ),
    RouteKey("DELETE", f"{V1}/templates/{{template_id}}"): (TEMPLATE_WRITERS, Call("template")),
    RouteKey("GET", f"{V1}/templates/{{template_id}}/versions"): (
        TEMPLATE_READERS,
        Call("template"),
    ),
    RouteKey("POST", f"{V1}/templates/{{template_id}}/preview"): (
        TEMPLATE_READERS,
        Call("template", lambda: {}),
    ),
    RouteKey("GET", f"{V1}/templates/{{template_id}}/variants"): (
        TEMPLATE_READERS,
        Call("template"),
    ),
    RouteKey("POST", f"{V1}/templates/{{template_id}}/variants"): (
        TEMPLATE_WRITERS,
        Call("template", lambda: {"key": "c", "subject": "C", "percent": 10}),
    ),
    RouteKey("PATCH", f"{V1}/templates/{{template_id}}/variants/{{variant_id}}"): (
        TEMPLATE_WRITERS,
        Call("template", lambda: {"percent": 20}),
    ),
    RouteKey("DELETE", f"{V1}/templates/{{template_id}}/variants/{{variant_id}}"): (
        TEMPLATE_WRITERS,
        Call("template"),
    ),
    RouteKey("GET", f"{V1}/template-layouts"): (TEMPLATE_READERS, Call()),
    RouteKey("POST", f"{V1}/template-layouts"): (TEMPLATE_WRITERS, Call(body=_new_layout_body)),
    RouteKey("GET", f"{V1}/template-layouts/{{layout_id}}"): (
        TEMPLATE_READERS,
        Call("template_layout"),
    ),
    RouteKey("PATCH", f"{V1}/template-layouts/{{layout_id}}"): (
        TEMPLATE_WRITERS,
        Call("template_layout", lambda: {"name": f"renamed-{uuid.uuid4().hex[:6]}"}),
    ),
    RouteKey("DELETE", f"{V1}/template-layouts/{{layout_id}}"): (
        TEMPLATE_WRITERS,
        Call("template_layout"),
    ),
    RouteKey("GET", f"{V1}/me"): (ALL, Call()),
    RouteKey("GET", f"{V1}/users"): (PEOPLE_READERS, Call()),
    RouteKey("POST", f"{V1}/users"): (MANAGERS, Call(body=_new_user_body)),
    RouteKey("GET", f"{V1}/users/{{user_id}}"): (PEOPLE_READERS, Call("user")),
    RouteKey("PATCH", f"{V1}/users/{{user_id}}"): (
        MANAGERS,
        Call("user", lambda: {"name": "Renamed"}),
    ),
    RouteKey("POST", f"{V1}/users/{{user_id}}/reset-mfa"): (MANAGERS, Call("user")),
    RouteKey("POST", f"{V1}/users/{{user_id}}/sign-out-everywhere"): (MANAGERS, Call("user")),
    RouteKey("GET", f"{V1}/api-keys"): (PEOPLE_READERS, Call()),
    RouteKey("POST", f"{V1}/api-keys"): (
        MANAGERS,
        Call(body=lambda: {"name": "ci", "scopes": ["tenant:read"]}),
    ),
    RouteKey("GET", f"{V1}/api-keys/{{key_id}}"): (PEOPLE_READERS, Call("api_key")),
    RouteKey("DELETE", f"{V1}/api-keys/{{key_id}}"): (MANAGERS, Call("api_key")),
    RouteKey("GET", f"{V1}/tenant"): (ALL, Call()),
    RouteKey("PATCH", f"{V1}/tenant"): (
        MANAGERS,
        Call(body=lambda: {"physical_address": "1 Main St"}),
    ),
    RouteKey("GET", f"{V1}/contacts"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/contacts"): (CONTACT_WRITERS, Call(body=_new_contact_body)),
    # Whether a person is a contact is PHI: look-ups need phi:read.
    RouteKey("POST", f"{V1}/contacts/lookup"): (
        CONTACT_WRITERS,
        Call(body=lambda: {"external_id": "mrn-0"}),
    ),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}"): (CONTACT_READERS, Call("contact")),
    RouteKey("PATCH", f"{V1}/contacts/{{contact_id}}"): (
        CONTACT_WRITERS,
        Call("contact", lambda: {"last_name": "Renamed"}),
    ),
    RouteKey("DELETE", f"{V1}/contacts/{{contact_id}}"): (CONTACT_WRITERS, Call("contact")),
    RouteKey("POST", f"{V1}/contacts/{{contact_id}}/merge"): (
        CONTACT_WRITERS,
        Call(
            "duplicate_contacts",
            body_of=lambda target: {"duplicate_ids": [target.facts["duplicate_id"]]},
        ),
    ),
    RouteKey("GET", f"{V1}/journey-stages"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/journey-stages"): (CONTACT_WRITERS, Call(body=_new_stage_body)),
    RouteKey("PATCH", f"{V1}/journey-stages/{{stage_key}}"): (
        CONTACT_WRITERS,
        Call("journey_stage", lambda: {"label": "Renamed"}),
    ),
    RouteKey("GET", f"{V1}/contact-fields"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/contact-fields"): (CONTACT_WRITERS, Call(body=_new_field_body)),
    RouteKey("GET", f"{V1}/contact-fields/{{field_id}}"): (CONTACT_READERS, Call("contact_field")),
    RouteKey("PATCH", f"{V1}/contact-fields/{{field_id}}"): (
        CONTACT_WRITERS,
        Call("contact_field", lambda: {"label": "Renamed"}),
    ),
    RouteKey("DELETE", f"{V1}/contact-fields/{{field_id}}"): (
        CONTACT_WRITERS,
        Call("contact_field"),
    ),
    RouteKey("PUT", f"{V1}/contacts/upsert"): (
        CONTACT_WRITERS,
        Call(body=lambda: {"match": "external_id", "contact": _new_contact_body()}),
    ),
    RouteKey("POST", f"{V1}/contacts/batch"): (
        CONTACT_WRITERS,
        Call(body=lambda: {"match": "external_id", "items": [_new_contact_body()]}),
    ),
    RouteKey("GET", f"{V1}/lists"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/lists"): (
        CONTACT_WRITERS,
        Call(body=lambda: {"name": f"list-{uuid.uuid4().hex[:8]}"}),
    ),
    RouteKey("GET", f"{V1}/lists/{{list_id}}"): (CONTACT_READERS, Call("contact_list")),
    RouteKey("PATCH", f"{V1}/lists/{{list_id}}"): (
        CONTACT_WRITERS,
        Call("contact_list", lambda: {"description": "Renamed"}),
    ),
    RouteKey("DELETE", f"{V1}/lists/{{list_id}}"): (CONTACT_WRITERS, Call("contact_list")),
    RouteKey("GET", f"{V1}/lists/{{list_id}}/members"): (CONTACT_READERS, Call("contact_list")),
    RouteKey("POST", f"{V1}/lists/{{list_id}}/members"): (
        CONTACT_WRITERS,
        Call("contact_list", lambda: {"add": [str(uuid.uuid4())]}),
    ),
    RouteKey("POST", f"{V1}/events"): (CONTACT_WRITERS, Call(body=_new_event_body)),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}/events"): (
        CONTACT_READERS,
        Call("contact_with_events"),
    ),
    RouteKey("GET", f"{V1}/segments"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/segments"): (CONTACT_WRITERS, Call(body=_new_segment_body)),
    RouteKey("POST", f"{V1}/segments/preview"): (
        CONTACT_READERS,
        Call(body=lambda: {"rule": EMAIL_SET}),
    ),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}"): (CONTACT_READERS, Call("segment")),
    RouteKey("PATCH", f"{V1}/segments/{{segment_id}}"): (
        CONTACT_WRITERS,
        Call("segment", lambda: {"description": "Renamed"}),
    ),
    RouteKey("DELETE", f"{V1}/segments/{{segment_id}}"): (CONTACT_WRITERS, Call("segment")),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/count"): (CONTACT_READERS, Call("segment")),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/members"): (CONTACT_READERS, Call("segment")),
    # Plain columns only: PHI columns need phi:export as well (tests/segments).
    RouteKey("POST", f"{V1}/segments/{{segment_id}}/export"): (
        CONTACT_READERS,
        Call("segment", lambda: {"columns": ["id", "journey_stage"]}),
    ),
    RouteKey("POST", f"{V1}/segments/{{segment_id}}/snapshots"): (
        CONTACT_WRITERS,
        Call("segment", lambda: {"reason": "spring campaign"}),
    ),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/snapshots/{{snapshot_id}}"): (
        CONTACT_READERS,
        Call("segment_snapshot"),
    ),
    RouteKey("GET", f"{V1}/imports"): (CONTACT_READERS, Call()),
    RouteKey("POST", f"{V1}/imports"): (CONTACT_WRITERS, Call(files=_import_csv)),
    RouteKey("GET", f"{V1}/imports/{{job_id}}"): (CONTACT_READERS, Call("import_job")),
    RouteKey("GET", f"{V1}/imports/{{job_id}}/errors"): (CONTACT_READERS, Call("import_job")),
    RouteKey("GET", f"{V1}/imports/{{job_id}}/errors.csv"): (
        CONTACT_READERS,
        Call("import_job"),
    ),
    RouteKey("POST", f"{V1}/imports/{{job_id}}/cancel"): (CONTACT_WRITERS, Call("import_job")),
    RouteKey("GET", f"{V1}/audit/events"): (AUDIT_READERS, Call()),
    RouteKey("GET", f"{V1}/audit/events/{{event_id}}"): (AUDIT_READERS, Call("audit_event")),
    RouteKey("GET", f"{V1}/audit/export"): (AUDIT_READERS, Call()),
    RouteKey("GET", f"{V1}/audit/verify"): (AUDIT_READERS, Call()),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}/consents"): (
        CONSENT_READERS,
        Call("consenting_contact"),
    ),
    RouteKey("POST", f"{V1}/contacts/{{contact_id}}/consents"): (
        CONSENT_WRITERS,
        Call(
            "contact",
            lambda: {"channel": "sms", "purpose": "transactional", "status": "granted"},
        ),
    ),
    RouteKey("GET", f"{V1}/topics"): (CONSENT_READERS, Call()),
    RouteKey("POST", f"{V1}/topics"): (
        CONSENT_WRITERS,
        Call(body=lambda: {"key": f"t-{uuid.uuid4().hex[:8]}", "name": "Wellness"}),
    ),
    RouteKey("GET", f"{V1}/suppressions"): (SUPPRESSION_USERS, Call()),
    RouteKey("POST", f"{V1}/suppressions"): (
        SUPPRESSION_USERS,
        Call(body=lambda: {"address": _new_address(), "reason": "manual"}),
    ),
    RouteKey("POST", f"{V1}/suppressions/check"): (
        SUPPRESSION_USERS,
        Call(body=lambda: {"address": _new_address()}),
    ),
    RouteKey("POST", f"{V1}/suppressions/import"): (
        SUPPRESSION_USERS,
        Call(files=_suppression_csv),
    ),
    RouteKey("DELETE", f"{V1}/suppressions/{{suppression_id}}"): (
        SUPPRESSION_USERS,
        Call("suppression", lambda: {"reason": "added by mistake"}),
    ),
    RouteKey("GET", f"{V1}/domains"): (ALL, Call()),
    RouteKey("POST", f"{V1}/domains"): (
        MANAGERS,
        Call(body=lambda: {"name": f"d-{uuid.uuid4().hex[:8]}.example"}),
    ),
    RouteKey("GET", f"{V1}/domains/{{domain_id}}"): (ALL, Call("sending_domain")),
    RouteKey("DELETE", f"{V1}/domains/{{domain_id}}"): (MANAGERS, Call("sending_domain")),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/check"): (MANAGERS, Call("sending_domain")),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/rotate"): (MANAGERS, Call("sending_domain")),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/promote"): (MANAGERS, Call("rotated_domain")),
}


def _new_webhook_body() -> dict[str, Any]:
    return {"url": "https://hooks.example.org/carepost", "event_types": ["message.bounced"]}


WEBHOOK = "/webhooks/{endpoint_id}"
DELIVERY = f"{WEBHOOK}/deliveries/{{delivery_id}}"
MATRIX |= {
    RouteKey("GET", f"{V1}/webhooks"): (WEBHOOK_READERS, Call()),
    RouteKey("POST", f"{V1}/webhooks"): (MANAGERS, Call(body=_new_webhook_body)),
    RouteKey("GET", f"{V1}{WEBHOOK}"): (WEBHOOK_READERS, Call("webhook_endpoint")),
    RouteKey("PATCH", f"{V1}{WEBHOOK}"): (
        MANAGERS,
        Call("webhook_endpoint", lambda: {"description": "renamed"}),
    ),
    RouteKey("DELETE", f"{V1}{WEBHOOK}"): (MANAGERS, Call("webhook_endpoint")),
    RouteKey("POST", f"{V1}{WEBHOOK}/rotate-secret"): (MANAGERS, Call("webhook_endpoint")),
    RouteKey("POST", f"{V1}{WEBHOOK}/test"): (MANAGERS, Call("webhook_endpoint")),
    RouteKey("GET", f"{V1}{WEBHOOK}/deliveries"): (WEBHOOK_READERS, Call("webhook_endpoint")),
    RouteKey("GET", f"{V1}{DELIVERY}"): (WEBHOOK_READERS, Call("webhook_endpoint")),
    RouteKey("POST", f"{V1}{DELIVERY}/replay"): (MANAGERS, Call("webhook_endpoint")),
    RouteKey("GET", f"{V1}/tracking/settings"): (ALL, Call()),
    RouteKey("PUT", f"{V1}/tracking/settings"): (
        MANAGERS,
        Call(body=lambda: {"track_opens": False, "track_clicks": True}),
    ),
    RouteKey("POST", f"{V1}/messages"): (SENDERS, Call(body=_new_message_body)),
    RouteKey("POST", f"{V1}/messages/batch"): (
        SENDERS,
        Call(body=lambda: {"items": [_new_message_body()]}),
    ),
    RouteKey("GET", f"{V1}/messages"): (REPORT_READERS, Call()),
    # Whether an address was written to is PHI: the search needs phi:read.
    RouteKey("POST", f"{V1}/messages/search"): (
        SENDERS,
        Call(body=lambda: {"to": _new_address()}),
    ),
    RouteKey("GET", f"{V1}/messages/{{message_id}}"): (REPORT_READERS, Call("message")),
    RouteKey("GET", f"{V1}/campaigns"): (REPORT_READERS, Call()),
    RouteKey("POST", f"{V1}/campaigns"): (
        SENDERS,
        Call("contact_list", body_of=lambda target: _new_campaign_body(target)),
    ),
    RouteKey("GET", f"{V1}/campaigns/{{campaign_id}}"): (REPORT_READERS, Call("campaign")),
    RouteKey("PATCH", f"{V1}/campaigns/{{campaign_id}}"): (
        SENDERS,
        Call("campaign", lambda: {"name": "Renamed"}),
    ),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/schedule"): (
        SENDERS,
        Call("campaign", lambda: {"send_at": "2030-01-01T09:00:00Z"}),
    ),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/pause"): (
        SENDERS,
        Call("scheduled_campaign"),
    ),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/resume"): (SENDERS, Call("paused_campaign")),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/cancel"): (SENDERS, Call("campaign")),
}
WORKFLOW = f"{V1}/workflows/{{workflow_id}}"
MATRIX |= {
    RouteKey("GET", f"{V1}/workflows"): (TEMPLATE_READERS, Call()),
    RouteKey("POST", f"{V1}/workflows"): (SENDERS, Call(body=_new_workflow_body)),
    RouteKey("POST", f"{V1}/workflows/events"): (
        SENDERS,
        Call(
            "active_workflow",
            body_of=lambda t: {"contact_id": t.params["contact_id"], "name": "portal_login"},
        ),
    ),
    RouteKey("GET", WORKFLOW): (TEMPLATE_READERS, Call("workflow")),
    RouteKey("PATCH", WORKFLOW): (
        SENDERS,
        Call("workflow", lambda: {"name": f"Renamed {uuid.uuid4().hex[:6]}"}),
    ),
    RouteKey("POST", f"{WORKFLOW}/validate"): (
        TEMPLATE_READERS,
        Call("workflow", lambda: {"draft": {"steps": [{"id": "end", "type": "exit"}]}}),
    ),
    RouteKey("POST", f"{WORKFLOW}/activate"): (SENDERS, Call("workflow")),
    RouteKey("POST", f"{WORKFLOW}/pause"): (SENDERS, Call("active_workflow")),
    RouteKey("POST", f"{WORKFLOW}/resume"): (SENDERS, Call("paused_workflow")),
    RouteKey("POST", f"{WORKFLOW}/archive"): (SENDERS, Call("workflow")),
    RouteKey("POST", f"{WORKFLOW}/enroll"): (
        SENDERS,
        Call(
            "active_workflow",
            body_of=lambda t: {"contact_ids": [t.params["contact_id"]]},
        ),
    ),
    RouteKey("DELETE", f"{WORKFLOW}/runs/{{contact_id}}"): (SENDERS, Call("active_workflow")),
    RouteKey("GET", f"{WORKFLOW}/runs"): (TEMPLATE_READERS, Call("active_workflow")),
    RouteKey("GET", f"{WORKFLOW}/runs/{{contact_id}}/history"): (
        TEMPLATE_READERS,
        Call("active_workflow"),
    ),
    RouteKey("GET", f"{WORKFLOW}/counts"): (TEMPLATE_READERS, Call("active_workflow")),
    RouteKey("POST", f"{WORKFLOW}/simulate"): (
        TEMPLATE_READERS,
        Call("active_workflow", body_of=lambda t: {"contact_id": t.params["contact_id"]}),
    ),
}
MATRIX |= {
    RouteKey("GET", f"{WORKFLOW}/trigger"): (TEMPLATE_READERS, Call("workflow")),
    RouteKey("PUT", f"{WORKFLOW}/trigger"): (
        SENDERS,
        Call("workflow", lambda: {"trigger": {"kind": "event", "name": "portal_login"}}),
    ),
}


def _new_dlp_rule_body() -> dict[str, Any]:
    return {"name": f"d-{uuid.uuid4().hex[:8]}", "kind": "dictionary", "terms": ["oxycodone"]}


MATRIX |= {
    RouteKey("GET", f"{V1}/policy"): (POLICY_READERS, Call()),
    RouteKey("PUT", f"{V1}/policy"): (MANAGERS, Call(body=lambda: {"document": {}})),
    RouteKey("DELETE", f"{V1}/policy"): (MANAGERS, Call()),
    RouteKey("POST", f"{V1}/policy/decide"): (
        DLP_SCANNERS,
        Call(body=lambda: {"recipient_domain": "example.org", "template_phi": True}),
    ),
    RouteKey("GET", f"{V1}/gateway/clients"): (ALL, Call()),
    RouteKey("POST", f"{V1}/gateway/clients"): (
        MANAGERS,
        Call(body=lambda: {"name": "Postfix relay", "sender_domains": ["clinic.example"]}),
    ),
    RouteKey("GET", f"{V1}/gateway/clients/{{client_id}}"): (ALL, Call("gateway_client")),
    RouteKey("DELETE", f"{V1}/gateway/clients/{{client_id}}"): (MANAGERS, Call("gateway_client")),
    RouteKey("PATCH", f"{V1}/gateway/clients/{{client_id}}"): (
        MANAGERS,
        Call("gateway_client", lambda: {"max_recipients": 5}),
    ),
    RouteKey("POST", f"{V1}/gateway/clients/{{client_id}}/secret"): (
        MANAGERS,
        Call("gateway_client"),
    ),
    RouteKey("GET", f"{V1}/gateway/inbound-route"): (ALL, Call()),
    RouteKey("PUT", f"{V1}/gateway/inbound-route"): (
        MANAGERS,
        Call(body=lambda: {"host": "mail.clinic.example", "port": 25}),
    ),
    RouteKey("DELETE", f"{V1}/gateway/inbound-route"): (MANAGERS, Call()),
    RouteKey("GET", f"{V1}/dlp/dictionaries"): (MANAGERS, Call()),
    RouteKey("POST", f"{V1}/dlp/dictionaries"): (MANAGERS, Call(body=_new_dlp_rule_body)),
    RouteKey("GET", f"{V1}/dlp/dictionaries/{{rule_id}}"): (MANAGERS, Call("dlp_rule")),
    RouteKey("PATCH", f"{V1}/dlp/dictionaries/{{rule_id}}"): (
        MANAGERS,
        Call("dlp_rule", lambda: {"severity": "high"}),
    ),
    RouteKey("DELETE", f"{V1}/dlp/dictionaries/{{rule_id}}"): (MANAGERS, Call("dlp_rule")),
    RouteKey("POST", f"{V1}/dlp/scan"): (DLP_SCANNERS, Call(body=lambda: {"text": "hello"})),
}


def _new_key_body() -> dict[str, Any]:
    from tests.e2ee.e2ee_pki import TestCA

    address = _new_address()
    return {"address": address, "material": TestCA().issue(address).cert_pem.decode()}


def _new_signing_body() -> dict[str, Any]:
    from tests.e2ee.e2ee_pki import TestCA

    issued = TestCA().issue("care@clinic.example")
    return {
        "address": "*",
        "certificate": issued.cert_pem.decode(),
        "private_key": secret_value(issued.key_pem.decode()),
    }


def _received_message_body() -> dict[str, Any]:
    import base64

    import pysequoia

    address = _new_address()
    key = pysequoia.Tsk.generate(f"R <{address}>").extract_certificate()
    keydata = base64.b64encode(bytes(key)).decode()
    return {
        "message": f"From: {address}\r\nSubject: hi\r\n"
        f"Autocrypt: addr={address}; keydata={keydata}\r\n\r\nhi\r\n"
    }


# End-to-end encryption (issue 6): the key directory is the organization's managers'.
MATRIX |= {
    RouteKey("GET", f"{V1}/keys"): (MANAGERS, Call()),
    RouteKey("POST", f"{V1}/keys"): (MANAGERS, Call(body=_new_key_body)),
    # Whether a person has a key is PHI: the look-up needs phi:read too.
    RouteKey("POST", f"{V1}/keys/lookup"): (
        MANAGERS,
        Call(body=lambda: {"address": _new_address()}),
    ),
    RouteKey("POST", f"{V1}/keys/import-message"): (MANAGERS, Call(body=_received_message_body)),
    RouteKey("DELETE", f"{V1}/keys/{{key_id}}"): (MANAGERS, Call("recipient_key")),
    RouteKey("POST", f"{V1}/keys/{{key_id}}/revoke"): (MANAGERS, Call("recipient_key")),
    RouteKey("GET", f"{V1}/keys/signing"): (MANAGERS, Call()),
    RouteKey("POST", f"{V1}/keys/signing/smime"): (MANAGERS, Call(body=_new_signing_body)),
    RouteKey("POST", f"{V1}/keys/signing/openpgp"): (
        MANAGERS,
        Call(body=lambda: {"address": "care@clinic.example", "name": "Clinic"}),
    ),
}


# The secure portal (carepost/portal): the sender's view reads like the message log,
# recall is a sender's act.
MATRIX |= {
    RouteKey("GET", f"{V1}/portal/messages"): (REPORT_READERS, Call()),
    RouteKey("GET", f"{V1}/portal/messages/{{portal_item_id}}"): (
        REPORT_READERS,
        Call("portal_item"),
    ),
    RouteKey("POST", f"{V1}/portal/messages/{{portal_item_id}}/recall"): (
        SENDERS,
        Call("portal_item"),
    ),
    RouteKey("POST", f"{V1}/portal/messages/{{portal_item_id}}/question"): (
        SENDERS,
        Call("portal_item", lambda: {"question": "Your pet's name?", "answer": "Rex"}),
    ),
    RouteKey("GET", f"{V1}/portal/settings"): (ALL, Call()),
    RouteKey("PUT", f"{V1}/portal/settings"): (MANAGERS, Call(body=lambda: {"expiry_days": 30})),
}


def test_matrix_covers_every_api_route(app):
    api = {key for key in app_routes(app) if key.kind == "api"}
    assert not api - set(MATRIX), (
        f"routes missing from the role matrix: {sorted(map(str, api - set(MATRIX)))}"
    )
    assert not set(MATRIX) - api, (
        f"matrix rows for routes that no longer exist: {set(MATRIX) - api}"
    )


def _principal_headers(
    kind: str, role: Role, tenant: TenantPair, make_user, sign_in, make_api_key
) -> dict[str, str]:
    if kind == "session":
        user_id, _email, _password = make_user(tenant, role.value)
        return sign_in(tenant, user_id)
    return make_api_key(tenant, sorted(ROLE_PERMISSIONS[role]))


def _call(client, objects: Objects, tenant: TenantPair, key: RouteKey, call: Call, headers):
    path = key.path
    if call.factory is not None:
        target: Target = getattr(objects, call.factory)(tenant)
        path = path.format(**target.params)
    body = call.body() if call.body else None
    if call.body_of is not None:
        body = call.body_of(target)
    if call.files is not None:
        return client.request(key.method, path, files=call.files(), headers=headers)
    return client.request(key.method, path, json=body, headers=headers)


@pytest.mark.parametrize("kind", ["session", "api_key"])
@pytest.mark.parametrize("role", list(Role), ids=str)
def test_role_matrix(kind, role, client, objects, make_tenant, make_user, sign_in, make_api_key):
    tenant = make_tenant()
    headers = _principal_headers(kind, role, tenant, make_user, sign_in, make_api_key)
    wrong = []
    for key, (allowed, call) in sorted(MATRIX.items()):
        response = _call(client, objects, tenant, key, call, headers)
        if role in allowed:
            if not 200 <= response.status_code < 300:
                wrong.append(f"{key}: expected success, got {response.status_code} {response.text}")
        elif response.status_code != 403 or (
            response.headers["content-type"] != "application/problem+json"
        ):
            wrong.append(f"{key}: expected 403, got {response.status_code}")
    assert not wrong, f"{role} as {kind}:\n" + "\n".join(wrong)


def test_matrix_agrees_with_the_permission_table():
    """The hand-written matrix and ROLE_PERMISSIONS tell the same story for key rules."""
    assert "phi:read" not in ROLE_PERMISSIONS[ANALYST]
    auditor = ROLE_PERMISSIONS[AUDITOR]
    assert {"audit:read", "audit:export"} <= auditor
    writes = {p for p in PERMISSIONS if p.endswith((":write", ":send", ":rotate"))}
    assert not auditor & writes
    assert not ROLE_PERMISSIONS[MARKETER] & {"users:write", "users:read", "apikeys:write"}
    assert ROLE_PERMISSIONS[ADMIN] == ROLE_PERMISSIONS[OWNER] - {"keys:rotate"}


def test_auditor_reads_but_never_changes_anything():
    for key, (allowed, _call) in MATRIX.items():
        if key.method != "GET":
            assert AUDITOR not in allowed, str(key)


@pytest.mark.parametrize("kind", ["session", "api_key"])
def test_analyst_sees_contacts_without_phi(
    kind, client, objects, make_tenant, make_user, sign_in, make_api_key, audit_trail
):
    tenant = make_tenant()
    target = objects.contact(tenant)
    headers = _principal_headers(kind, ANALYST, tenant, make_user, sign_in, make_api_key)
    contact_id = target.params["contact_id"]
    one = client.get(f"{V1}/contacts/{contact_id}", headers=headers)
    listed = client.get(f"{V1}/contacts", headers=headers)
    assert one.status_code == listed.status_code == 200
    assert one.json()["phi_redacted"] is True and one.json()["email"] is None
    assert [c["id"] for c in listed.json()["items"]] == [contact_id]
    for value in target.facts.values():
        assert str(value) not in one.text + listed.text
    assert audit_trail(tenant, "contact.view_phi") == []


def test_marketer_cannot_manage_users(client, objects, make_tenant, make_user, sign_in):
    tenant = make_tenant()
    headers = sign_in(tenant, make_user(tenant, "marketer")[0])
    victim = objects.user(tenant)
    user_path = f"{V1}/users/{victim.params['user_id']}"
    assert client.post(f"{V1}/users", json=_new_user_body(), headers=headers).status_code == 403
    assert client.patch(user_path, json={"role": "owner"}, headers=headers).status_code == 403
    assert client.post(f"{user_path}/reset-mfa", headers=headers).status_code == 403
    assert client.get(f"{V1}/users", headers=headers).status_code == 403


def test_admin_cannot_create_or_change_owners(client, objects, make_tenant, make_user, sign_in):
    tenant = make_tenant()
    headers = sign_in(tenant, make_user(tenant, "admin")[0])
    response = client.post(
        f"{V1}/users", json=_new_user_body() | {"role": "owner"}, headers=headers
    )
    assert response.status_code == 403
    assert response.json()["errors"][0]["pointer"] == "#/body/role"
    analyst = objects.user(tenant)
    promote = client.patch(
        f"{V1}/users/{analyst.params['user_id']}", json={"role": "owner"}, headers=headers
    )
    assert promote.status_code == 403
    owner = objects.user(tenant, role="owner")
    before = owner.snapshot()
    for path, body in (
        ("", {"name": "Demoted", "role": "analyst"}),
        ("/reset-mfa", None),
    ):
        method = "PATCH" if not path else "POST"
        response = client.request(
            method, f"{V1}/users/{owner.params['user_id']}{path}", json=body, headers=headers
        )
        assert response.status_code == 403, path
    assert owner.snapshot() == before


def test_an_owner_scoped_api_key_grants_as_an_admin_at_most(client, make_tenant, make_api_key):
    tenant = make_tenant()
    headers = make_api_key(tenant, sorted(ROLE_PERMISSIONS[OWNER]))
    response = client.post(
        f"{V1}/users", json=_new_user_body() | {"role": "owner"}, headers=headers
    )
    assert response.status_code == 403


def test_users_cannot_change_their_own_role(client, make_tenant, make_user, sign_in):
    tenant = make_tenant()
    admin_id = make_user(tenant, "admin")[0]
    headers = sign_in(tenant, admin_id)
    response = client.patch(f"{V1}/users/{admin_id}", json={"role": "owner"}, headers=headers)
    assert response.status_code == 403


def test_service_refuses_grants_above_the_actors_role(runtime, make_tenant):
    tenant, keys = make_tenant()
    with runtime.bound_session(keys) as session:
        for actor_role, role in (
            ("admin", "owner"),
            ("marketer", "analyst"),
            ("auditor", "analyst"),
        ):
            with pytest.raises(PermissionDenied):
                accounts.create_user(
                    session,
                    tenant_id=tenant.id,
                    email=f"x-{uuid.uuid4().hex[:6]}@clinic.example",
                    role=role,
                    actor_role=actor_role,
                )
        user, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email="owner2@clinic.example",
            role="owner",
            actor_role="owner",
            password=new_password(),
        )
        assert user.role == "owner"


def test_the_last_owner_cannot_be_demoted_or_disabled(runtime, make_tenant):
    tenant, keys = make_tenant()
    actor = Actor("user", "test", "owner")
    with runtime.bound_session(keys) as session:
        first, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email="o1@clinic.example",
            role="owner",
            password=new_password(),
        )
        second, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email="o2@clinic.example",
            role="owner",
            password=new_password(),
        )
        # Two owners: one may step down.
        accounts.update_user(
            session,
            tenant_id=tenant.id,
            user_id=second.id,
            actor=actor,
            actor_role="owner",
            role="admin",
        )
        for change in ({"role": "admin"}, {"status": "disabled"}):
            with pytest.raises(Conflict) as refused:
                accounts.update_user(
                    session,
                    tenant_id=tenant.id,
                    user_id=first.id,
                    actor=actor,
                    actor_role="owner",
                    **change,
                )
            assert refused.value.errors[0].field in change
        assert first.role == "owner" and first.status == "active"


def test_api_key_scopes_cannot_exceed_the_creator(
    client, make_tenant, make_user, sign_in, make_api_key
):
    tenant = make_tenant()
    # An admin lacks keys:rotate, so cannot hand it to a key.
    admin = sign_in(tenant, make_user(tenant, "admin")[0])
    response = client.post(
        f"{V1}/api-keys", json={"name": "x", "scopes": ["keys:rotate"]}, headers=admin
    )
    assert response.status_code == 403
    assert response.json()["errors"][0]["pointer"] == "#/body/scopes"
    # A key that may create keys can only pass on what it holds.
    narrow = make_api_key(tenant, ["apikeys:write", "contacts:read"])
    escalate = client.post(
        f"{V1}/api-keys",
        json={"name": "x", "scopes": ["contacts:read", "phi:read"]},
        headers=narrow,
    )
    assert escalate.status_code == 403
    same = client.post(
        f"{V1}/api-keys", json={"name": "x", "scopes": ["contacts:read"]}, headers=narrow
    )
    assert same.status_code == 201


def test_service_refuses_scopes_beyond_the_creator(runtime, make_tenant):
    tenant, keys = make_tenant()
    with runtime.bound_session(keys) as session, pytest.raises(PermissionDenied):
        apikeys.create_api_key(
            session,
            tenant_id=tenant.id,
            name="x",
            scopes=["tenant:read", "users:write"],
            creator_permissions=ROLE_PERMISSIONS[MARKETER],
            actor=Actor("user", "m", "marketer"),
        )
