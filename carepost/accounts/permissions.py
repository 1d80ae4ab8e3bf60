"""Roles and what each may do: least privilege, in one table.

API key scopes are drawn from the same permission names; a key can never hold a
permission its creator's role lacks.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MARKETER = "marketer"
    ANALYST = "analyst"
    AUDITOR = "auditor"


# Every permission, with what it lets the holder do (shown in the console and docs).
PERMISSIONS: dict[str, str] = {
    "tenant:read": "See the organization's settings",
    "tenant:write": "Change the organization's settings (session policy, address)",
    "users:read": "See users and their roles",
    "users:write": "Invite, change, disable users and reset their MFA",
    "apikeys:read": "See API keys (never their secrets)",
    "apikeys:write": "Create and revoke API keys",
    "audit:read": "Browse the audit trail",
    "audit:export": "Export the audit trail (CSV, JSON Lines)",
    "keys:rotate": "Rotate the organization's encryption keys",
    "contacts:read": "See contacts without their PHI",
    "contacts:write": "Create, change and delete contacts",
    "phi:read": "See protected health information (every view is audited)",
    "phi:export": "Export PHI (every export is audited)",
    "consent:read": "See contacts' consent and the organization's topics",
    "consent:write": "Record consent and manage topics",
    "suppressions:read": "See and check the suppression list",
    "suppressions:write": "Add, import and lift suppressions",
    "suppressions:override": "Lift suppressions from hard bounces and complaints",
    "reports:read": "See aggregate reports",
    "messages:send": "Send messages and campaigns",
    # Templates (issue 5): content and layouts; previews with PHI also need phi:read.
    "templates:read": "See email templates and layouts, preview them with a sample contact",
    "templates:write": "Create, change and delete email templates, layouts and A/B variants",
    "webhooks:read": "See webhook endpoints and their delivery logs (never secrets)",
    "webhooks:write": "Add, change, rotate, test and replay webhooks",
    "domains:write": "Add and delete sending domains, check their DNS, rotate DKIM keys",
    # Protection policy and DLP (issue 6).
    "policy:read": "See the organization's encryption and delivery protection policy",
    "policy:write": "Change the protection policy (every change is audited)",
    "dlp:read": "See DLP keyword dictionaries and MRN patterns (terms included)",
    "dlp:write": "Add, change and delete DLP keyword dictionaries and MRN patterns",
    "dlp:scan": (
        "Dry-run a DLP scan of a message (findings never show the matched text) "
        "or the protection decision for a recipient"
    ),
    # End-to-end encryption (issue 6): the key directory and the organization's signing keys.
    "recipient_keys:read": "See recipients' S/MIME certificates and OpenPGP keys",
    "recipient_keys:write": "Upload, import, look up (WKD) and delete recipients' keys",
    "signing_keys:write": "Set the organization's S/MIME and OpenPGP signing keys",
    # Workflows (issue 7): journeys; enrolling also covers removing contacts and events.
    "workflows:read": "See workflows, their runs and per-step counts; simulate them",
    "workflows:write": "Create, change, activate, pause, resume and archive workflows",
    "workflows:enroll": "Enroll contacts in workflows, remove them, post workflow events",
}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: frozenset(PERMISSIONS),
    Role.ADMIN: frozenset(PERMISSIONS) - {"keys:rotate"},
    Role.MARKETER: frozenset(
        {
            "tenant:read",
            "contacts:read",
            "contacts:write",
            "phi:read",
            "reports:read",
            "messages:send",
            "consent:read",
            "consent:write",
            "suppressions:read",
            "suppressions:write",
            "templates:read",
            "templates:write",
            "dlp:scan",
            "workflows:read",
            "workflows:write",
            "workflows:enroll",
        }
    ),
    Role.ANALYST: frozenset(
        {
            "tenant:read",
            "contacts:read",
            "reports:read",
            "consent:read",
            "templates:read",
            "workflows:read",
        }
    ),
    Role.AUDITOR: frozenset(
        {
            "tenant:read",
            "users:read",
            "apikeys:read",
            "audit:read",
            "audit:export",
            "reports:read",
            "consent:read",
            "webhooks:read",
            "policy:read",
        }
    ),
}

# Roles that must sign in with a second factor.
MFA_REQUIRED_ROLES = frozenset({Role.OWNER, Role.ADMIN})

# Who may grant which role: nobody grants a role above their own.
ROLE_RANK = {Role.OWNER: 4, Role.ADMIN: 3, Role.MARKETER: 1, Role.ANALYST: 1, Role.AUDITOR: 1}


def permissions_for(role: str) -> frozenset[str]:
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()


def may_grant(granter_role: str, role: str) -> bool:
    return ROLE_RANK[Role(granter_role)] >= ROLE_RANK[Role(role)] and Role(granter_role) in (
        Role.OWNER,
        Role.ADMIN,
    )
