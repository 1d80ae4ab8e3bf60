"""The seam between the outbox and the other parts of the email engine.

The outbox calls templates (rendering), mime-dkim (building and signing the
message), smtp (the transport and the retry schedule) and feedback (VERP return
paths, tracking, webhooks) through the names below, and only through them, so that
a test can put its own in one place (``monkeypatch.setattr(ports, ...)``).

=================================  ==============================================
name here                          module
=================================  ==============================================
RenderedMessage, render_raw        carepost.templates.rendering
prepare_template, PreparedTemplate carepost.templates.rendering
compile_content, TemplateError     carepost.templates.rendering
ContactView                        carepost.templates.context
contact_references, uses_phi       carepost.templates.analysis
Attachment, OutgoingMessage        carepost.delivery.mime
build_message, message_bytes       carepost.delivery.mime
build_bytes                        carepost.delivery.mime
domain_of                          carepost.delivery.mime
sign_all                           carepost.delivery.dkim
signing_keys_for                   carepost.domains.service
Envelope, DeliveryReport ...       carepost.delivery.transport
transport_from_settings            carepost.delivery.transport
next_attempt                       carepost.delivery.retry
return_path, return_token, unsubscribe_address_of ... carepost.delivery.verp
cached_feedback_secret             carepost.delivery.feedback_keys
tracked_html                       carepost.tracking.links
view_url                           carepost.tracking.view
emit                               carepost.webhooks.service
check_sender                       carepost.domains.senders
=================================  ==============================================

``carepost.tracking.service.tracking_choice`` is imported by the delivery loop
itself: tracking.service reaches the outbox through delivery.message_ledger, which
imports the outbox's events, which import this module.
"""

from __future__ import annotations

from carepost.delivery.dkim import sign_all
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.delivery.mime import (
    Attachment,
    OutgoingMessage,
    build_bytes,
    build_message,
    domain_of,
    message_bytes,
)
from carepost.delivery.retry import next_attempt
from carepost.delivery.transport import (
    DeliveryReport,
    Envelope,
    RecipientOutcome,
    Transport,
    transport_from_settings,
)
from carepost.delivery.verp import (
    return_path,
    return_path_of,
    return_token,
    unsubscribe_address_of,
)
from carepost.domains.senders import check_sender
from carepost.domains.service import signing_keys_for
from carepost.templates.analysis import contact_references, uses_phi
from carepost.templates.context import ContactView
from carepost.templates.rendering import (
    PreparedTemplate,
    RenderedMessage,
    TemplateError,
    compile_content,
    prepare_template,
    render_raw,
)
from carepost.tracking.links import tracked_html
from carepost.tracking.view import view_url
from carepost.webhooks.service import emit

__all__ = [
    "Attachment",
    "ContactView",
    "DeliveryReport",
    "Envelope",
    "OutgoingMessage",
    "PreparedTemplate",
    "RecipientOutcome",
    "RenderedMessage",
    "TemplateError",
    "Transport",
    "build_bytes",
    "build_message",
    "cached_feedback_secret",
    "check_sender",
    "compile_content",
    "contact_references",
    "domain_of",
    "emit",
    "message_bytes",
    "next_attempt",
    "prepare_template",
    "render_raw",
    "return_path",
    "return_path_of",
    "return_token",
    "sign_all",
    "signing_keys_for",
    "tracked_html",
    "transport_from_settings",
    "unsubscribe_address_of",
    "uses_phi",
    "view_url",
]
