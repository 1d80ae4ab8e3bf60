"""The console's pages and actions, as data, for the generic tests in
``test_console_generic.py`` (NetBox's generic view tests in miniature).

Adding a console page or form action means adding a line here; the generic tests then
check for it that signing in is required, the permission is enforced with a 403 page,
a post without the CSRF token is refused, and another organization's ids give a 404 —
each refusal changing nothing. ``test_every_console_route_is_inventoried`` fails when a
route is missing from this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PageCase:
    # may hold {user_id} / {key_id} / {passkey_id} / {contact_id} / {list_id} / {field_id}
    # / {job_id} / {segment_id} / {template_id} / {endpoint_id} / {delivery_id}
    # / {domain_id} / {campaign_id} / {message_id}, filled from the organization
    path: str
    permission: str | None
    # A piece of a page that HTMX fetches (not a whole page with landmarks).
    fragment: bool = False

    @property
    def has_object(self) -> bool:
        return "{" in self.path


@dataclass(frozen=True)
class ActionCase:
    path: str
    permission: str | None
    data: dict[str, str] = field(default_factory=dict)

    @property
    def has_object(self) -> bool:
        return "{" in self.path


PAGES = (
    PageCase("/", None),
    PageCase("/users", "users:read"),
    PageCase("/users/{user_id}", "users:read"),
    PageCase("/api-keys", "apikeys:read"),
    PageCase("/settings", "tenant:read"),
    PageCase("/account", None),
    PageCase("/audit", "audit:read"),
    PageCase("/contacts", "contacts:read"),
    PageCase("/contacts/{contact_id}", "contacts:read"),
    PageCase("/contacts/{contact_id}/timeline", "contacts:read"),
    PageCase("/lists", "contacts:read"),
    PageCase("/lists/{list_id}", "contacts:read"),
    PageCase("/lists/{list_id}/delete", "contacts:write"),
    PageCase("/contact-fields", "contacts:read"),
    PageCase("/contact-fields/{field_id}/delete", "contacts:write"),
    PageCase("/journey-stages", "contacts:read"),
    PageCase("/segments", "contacts:read"),
    PageCase("/imports", "contacts:read"),
    PageCase("/imports/new", "contacts:write"),
    PageCase("/imports/{job_id}", "contacts:read"),
    PageCase("/imports/{job_id}/progress", "contacts:read", fragment=True),
    PageCase("/imports/{job_id}/mapping", "contacts:write"),
    PageCase("/segments/new", "contacts:read"),
    PageCase("/segments/{segment_id}", "contacts:read"),
    PageCase("/segments/{segment_id}/edit", "contacts:write"),
    PageCase("/segments/{segment_id}/delete", "contacts:write"),
    PageCase("/templates", "templates:read"),
    PageCase("/templates/new", "templates:write"),
    PageCase("/templates/{template_id}", "templates:read"),
    PageCase("/campaigns", "reports:read"),
    PageCase("/campaigns/new", "messages:send"),
    PageCase("/campaigns/{campaign_id}", "reports:read"),
    PageCase("/campaigns/{campaign_id}/edit", "messages:send"),
    PageCase("/campaigns/{campaign_id}/progress", "reports:read", fragment=True),
    PageCase("/webhooks", "webhooks:read"),
    PageCase("/webhooks/{endpoint_id}", "webhooks:read"),
    PageCase("/domains", "tenant:read"),
    PageCase("/domains/{domain_id}", "tenant:read"),
    PageCase("/messages", "reports:read"),
    PageCase("/messages/{message_id}", "reports:read"),
    PageCase("/workflows", "workflows:read"),
    PageCase("/workflows/new", "workflows:write"),
    PageCase("/workflows/{workflow_id}", "workflows:read"),
    PageCase("/workflows/{workflow_id}/versions", "workflows:read"),
    PageCase("/workflows/{workflow_id}/versions/{version}", "workflows:read"),
    PageCase("/workflows/{workflow_id}/runs", "workflows:read"),
    PageCase("/workflows/{workflow_id}/runs/{contact_id}", "workflows:read"),
    PageCase("/workflows/{workflow_id}/trigger", "workflows:read"),
    PageCase("/workflows/contacts/{contact_id}", "workflows:read"),
    PageCase("/portal", "reports:read"),
    PageCase("/portal/messages/{message_id}", "reports:read"),
    # SMTP gateway clients (carepost/web/gateway.py).
    PageCase("/gateway", "tenant:read"),
    PageCase("/gateway/clients/{gateway_client_id}", "tenant:read"),
    PageCase("/gateway/inbound-route", "tenant:read"),
    PageCase("/portal/settings", "tenant:read"),
    PageCase("/protection-policy", "policy:read"),
)

ACTIONS = (
    ActionCase("/users", "users:write", {"email": "new-person@clinic.example", "role": "analyst"}),
    ActionCase("/users/{user_id}", "users:write", {"role": "auditor", "status": "disabled"}),
    ActionCase("/users/{user_id}/reset-mfa", "users:write"),
    ActionCase("/users/{user_id}/sign-out-everywhere", "users:write"),
    ActionCase("/api-keys", "apikeys:write", {"name": "new key", "scopes": "tenant:read"}),
    ActionCase("/api-keys/{key_id}/revoke", "apikeys:write"),
    ActionCase(
        "/settings",
        "tenant:write",
        {"name": "Renamed", "session_idle_minutes": "5", "session_max_hours": "2"},
    ),
    ActionCase("/imports/upload", "contacts:write"),
    ActionCase("/imports/{job_id}/mapping", "contacts:write", {"match": "email", "col_0": "email"}),
    ActionCase("/imports/{job_id}/cancel", "contacts:write"),
    ActionCase("/imports/{job_id}/reveal", "phi:read"),
    ActionCase("/account/recovery-codes", None),
    ActionCase("/account/passkeys/options", None),
    ActionCase("/account/passkeys", None, {"name": "new passkey"}),
    ActionCase("/account/passkeys/{passkey_id}", None, {"name": "renamed"}),
    ActionCase("/account/passkeys/{passkey_id}/delete", None),
    ActionCase("/account/sessions/sign-out-others", None),
    ActionCase(
        "/account/password",
        None,
        {
            "current_password": "whatever",
            "new_password": "a new long password",
            "confirm_password": "a new long password",
        },
    ),
    ActionCase("/contacts/search", "phi:read", {"by": "email", "value": "who@clinic.example"}),
    ActionCase("/contacts/{contact_id}/reveal", "phi:read"),
    ActionCase(
        "/contacts/{contact_id}/consents",
        "consent:write",
        {"channel": "email", "purpose": "marketing", "status": "granted", "source": "paper"},
    ),
    ActionCase("/contacts/{contact_id}/lists", "contacts:write", {"list_id": ""}),
    ActionCase("/contacts/{contact_id}/lists/{list_id}/remove", "contacts:write"),
    ActionCase("/contacts/{contact_id}/stage", "contacts:write", {"stage": "active"}),
    ActionCase("/lists", "contacts:write", {"name": "New list"}),
    ActionCase("/lists/{list_id}", "contacts:write", {"name": "Renamed list"}),
    ActionCase("/lists/{list_id}/delete", "contacts:write"),
    ActionCase(
        "/contact-fields", "contacts:write", {"label": "Weight", "key": "weight", "type": "number"}
    ),
    ActionCase("/contact-fields/{field_id}/seal", "contacts:write"),
    ActionCase("/contact-fields/{field_id}/delete", "contacts:write"),
    ActionCase("/journey-stages", "contacts:write", {"label": "Post-op", "key": "post-op"}),
    ActionCase("/segments/preview", "contacts:read", {"rule": '{"suppressed": "any"}'}),
    ActionCase(
        "/segments",
        "contacts:write",
        {"name": "Everyone", "mode": "json", "rule": '{"suppressed": "any"}'},
    ),
    ActionCase("/segments/builder", "contacts:read", {"row": "1", "r1_kind": "suppressed"}),
    ActionCase(
        "/segments/{segment_id}",
        "contacts:write",
        {"name": "Renamed", "mode": "json", "rule": '{"suppressed": "sms"}'},
    ),
    ActionCase("/segments/{segment_id}/members", "phi:read"),
    ActionCase("/segments/{segment_id}/export", "contacts:read", {"columns": "id"}),
    ActionCase("/segments/{segment_id}/snapshots", "contacts:write", {"reason": "a send"}),
    ActionCase("/segments/{segment_id}/delete", "contacts:write"),
    ActionCase(
        "/templates/render", "templates:read", {"subject": "Hi", "html": "<p>{{ 1 + 1 }}</p>"}
    ),
    ActionCase(
        "/templates", "templates:write", {"name": "Welcome", "subject": "Hi", "text": "Hello"}
    ),
    ActionCase(
        "/templates/{template_id}",
        "templates:write",
        {"name": "Renamed", "subject": "Hi", "text": "Hello again"},
    ),
    ActionCase("/campaigns/summary", "messages:send", {"audience": ""}),
    ActionCase(
        "/campaigns",
        "messages:send",
        {"name": "New", "audience": "", "from": "news@clinic.example", "subject": "Hi"},
    ),
    ActionCase(
        "/campaigns/{campaign_id}",
        "messages:send",
        {"name": "Renamed", "audience": "", "from": "news@clinic.example", "subject": "Hi"},
    ),
    ActionCase("/campaigns/{campaign_id}/schedule", "messages:send"),
    ActionCase("/campaigns/{campaign_id}/pause", "messages:send"),
    ActionCase("/campaigns/{campaign_id}/resume", "messages:send"),
    ActionCase("/campaigns/{campaign_id}/cancel", "messages:send"),
    ActionCase(
        "/webhooks",
        "webhooks:write",
        {"url": "https://hooks.example.org/carepost", "event_types": "message.bounced"},
    ),
    ActionCase("/webhooks/{endpoint_id}/test", "webhooks:write"),
    ActionCase("/webhooks/{endpoint_id}/rotate", "webhooks:write"),
    ActionCase("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay", "webhooks:write"),
    ActionCase("/webhooks/{endpoint_id}/delete", "webhooks:write"),
    ActionCase("/domains", "domains:write", {"name": "mail.clinic.example"}),
    ActionCase("/domains/{domain_id}/check", "domains:write"),
    ActionCase("/domains/{domain_id}/rotate", "domains:write"),
    ActionCase("/domains/{domain_id}/promote", "domains:write"),
    ActionCase("/domains/{domain_id}/delete", "domains:write"),
    ActionCase("/messages/search", "phi:read", {"to": "who@clinic.example"}),
    ActionCase("/messages/{message_id}/reveal", "phi:read"),
    ActionCase(
        "/workflows",
        "workflows:write",
        {"name": "Welcome series", "sender_address": "care@clinic.example", "priority": "normal"},
    ),
    ActionCase("/workflows/{workflow_id}/builder", "workflows:write", {"action": "add:||"}),
    ActionCase("/workflows/{workflow_id}/draft", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/review", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/publish", "workflows:write"),
    ActionCase(
        "/workflows/{workflow_id}/settings",
        "workflows:write",
        {"name": "Renamed", "sender_address": "care@clinic.example", "priority": "high"},
    ),
    ActionCase("/workflows/{workflow_id}/activate", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/pause", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/resume", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/archive", "workflows:write"),
    ActionCase("/workflows/{workflow_id}/enroll", "workflows:enroll", {"audience": ""}),
    ActionCase("/workflows/{workflow_id}/simulate", "workflows:read", {"contact_id": ""}),
    ActionCase("/workflows/{workflow_id}/simulate/reveal", "phi:read", {"contact_id": ""}),
    ActionCase(
        "/workflows/{workflow_id}/trigger", "workflows:write", {"kind": "event", "name": "x"}
    ),
    ActionCase("/workflows/{workflow_id}/trigger/delete", "workflows:write"),
    ActionCase("/protection-policy", "policy:write", {"document": "{}"}),
    ActionCase(
        "/protection-policy/smime-trust",
        "policy:write",
        {"require_chain": "no", "revocation": "off", "use_system_store": "yes"},
    ),
    ActionCase("/logout", None),
    ActionCase("/logout/everywhere", None),
    # The secure portal (carepost/web/portal.py), keyed by the outbox message id.
    ActionCase("/portal/messages/{message_id}/reveal", "phi:read"),
    ActionCase("/portal/messages/{message_id}/recall", "messages:send"),
    ActionCase("/portal/messages/{message_id}/replies/{reply_id}/attachments/{index}", "phi:read"),
    # SMTP gateway clients (carepost/web/gateway.py).
    ActionCase(
        "/gateway/clients",
        "domains:write",
        {
            "name": "Exchange",
            "sender_domains": "lab.clinic.example",
            "max_message_mib": "25",
            "max_recipients": "100",
        },
    ),
    ActionCase("/gateway/clients/{gateway_client_id}/delete", "domains:write"),
    ActionCase(
        "/gateway/clients/{gateway_client_id}",
        "domains:write",
        {
            "name": "Exchange renamed",
            "sender_domains": "lab.clinic.example",
            "networks": "192.0.2.0/24",
            "max_message_mib": "20",
            "max_recipients": "50",
        },
    ),
    ActionCase("/gateway/clients/{gateway_client_id}/secret", "domains:write"),
    ActionCase(
        "/gateway/inbound-route",
        "domains:write",
        {"host": "mail.clinic.example", "port": "25", "tls_mode": "verify", "enabled": "yes"},
    ),
    ActionCase("/gateway/inbound-route/delete", "domains:write"),
    ActionCase(
        "/portal/settings",
        "tenant:write",
        {"notice_subject": "", "expiry_days": "14", "logo_url": "", "brand_color": "#0b5394"},
    ),
)

# The sign-in sequence has its own tests (test_console_signin.py).
SIGN_IN_ROUTES = frozenset(
    {
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/login/mfa"),
        ("POST", "/login/mfa"),
        ("POST", "/login/mfa/passkey/options"),
        ("POST", "/login/mfa/passkey"),
        ("GET", "/password"),
        ("POST", "/password"),
        ("GET", "/mfa/enrol"),
        ("POST", "/mfa/enrol"),
        ("GET", "/mfa/recovery-codes"),
    }
)

# Recipients' signed-link pages: public (no sign-in; the signed token is the credential),
# tested in tests/consent/test_recipient_pages.py (tampered, expired and other
# organizations' tokens) and tests/e2e/test_recipient_e2e.py.
RECIPIENT_ROUTES = frozenset(
    {
        ("GET", "/u/{token}"),
        ("POST", "/u/{token}"),
        ("GET", "/p/{token}"),
        ("POST", "/p/{token}"),
        # Tracking pixel and click redirect (tests/tracking/test_tracking_routes.py).
        ("GET", "/t/o/{token}"),
        ("GET", "/t/c/{token}"),
        # View in browser (tests/tracking/test_view_in_browser.py).
        ("GET", "/t/v/{token}"),
        # The secure portal's recipient pages: the link's random token finds the item,
        # a one-time code proves the recipient (tests/portal/test_portal_recipient.py).
        ("GET", "/s/{token}"),
        ("GET", "/s/{token}/brand.css"),
        ("POST", "/s/{token}/code"),
        ("POST", "/s/{token}/verify"),
        ("POST", "/s/{token}/password"),
        ("GET", "/s/{token}/attachments/{index}"),
        ("POST", "/s/{token}/reply"),
        ("POST", "/s/{token}/set-password"),
        ("POST", "/s/{token}/answer"),
    }
)

OBJECT_PLACEHOLDERS = {
    "{user_id}": "user_id",
    "{key_id}": "key_id",
    "{passkey_id}": "passkey_id",
    "{contact_id}": "contact_id",
    "{list_id}": "list_id",
    "{field_id}": "field_id",
    "{job_id}": "job_id",
    "{template_id}": "template_id",
    "{endpoint_id}": "endpoint_id",
    "{delivery_id}": "delivery_id",
    "{domain_id}": "domain_id",
    "{workflow_id}": "workflow_id",
    "{version}": "version",
    "{gateway_client_id}": "gateway_client_id",
}
