"""Imports every domain's models so that ``Base.metadata`` describes the whole database."""

from __future__ import annotations

from carepost.accounts import models as accounts_models
from carepost.audit import models as audit_models
from carepost.consent import models as consent_models
from carepost.contacts import activity_models as contacts_activity_models
from carepost.contacts import models as contacts_models
from carepost.core.database import Base
from carepost.crypto import models as crypto_models
from carepost.dlp import models as dlp_models
from carepost.domains import models as domains_models
from carepost.e2ee import models as e2ee_models
from carepost.gateway import models as gateway_models
from carepost.imports import models as imports_models
from carepost.messages import models as messages_models
from carepost.policy import models as policy_models
from carepost.portal import models as portal_models
from carepost.protection import models as protection_models
from carepost.segments import models as segments_models
from carepost.templates import models as templates_models
from carepost.tenancy import models as tenancy_models
from carepost.tracking import models as tracking_models
from carepost.webhooks import models as webhooks_models
from carepost.workflows import models as workflows_models
from carepost.workflows import trigger_models as workflows_trigger_models

DOMAIN_MODELS = (
    accounts_models,
    audit_models,
    consent_models,
    contacts_models,
    contacts_activity_models,
    crypto_models,
    dlp_models,
    domains_models,
    e2ee_models,
    gateway_models,
    imports_models,
    messages_models,
    policy_models,
    protection_models,
    segments_models,
    templates_models,
    tenancy_models,
    tracking_models,
    webhooks_models,
    workflows_models,
    workflows_trigger_models,
    portal_models,
)
metadata = Base.metadata
