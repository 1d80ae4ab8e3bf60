"""The seam between the outbox and the other parts of the email engine.

The outbox calls templates (rendering), mime-dkim (building and signing the
message), smtp (the transport and the retry schedule) and feedback (VERP return
paths, webhooks) through the names below, and only through them. Until those
modules are merged, each name points at the small working implementation in
:mod:`carepost.messages.defaults` (same signatures as docs/email-interfaces in
the issue), so the engine runs end to end today. Swapping one in is changing
its import line here, nothing else:

===========================  ==================================================
name here                    the real module (after merge)
===========================  ==================================================
RenderedMessage, render_raw  carepost.templates.rendering
contact_view                 carepost.templates.context.ContactView.of
render_template              carepost.templates.rendering
TemplateError                carepost.templates.rendering
Attachment, OutgoingMessage  carepost.delivery.mime
build_message, message_bytes carepost.delivery.mime
sign_message                 carepost.delivery.dkim + domains.signing_keys_for
Envelope, DeliveryReport ... carepost.delivery.transport
transport_from_settings      carepost.delivery.transport
next_attempt                 carepost.delivery.retry
return_path                  carepost.delivery.verp
emit_webhook                 carepost.webhooks.service.emit
check_sender                 carepost.domains.service (verified sending domains)
===========================  ==================================================
"""

from __future__ import annotations

from carepost.delivery.dkim import sign_all
from carepost.delivery.mime import (
    Attachment,
    OutgoingMessage,
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
from carepost.domains.service import signing_keys_for
from carepost.messages.defaults import (
    check_sender,
    emit_webhook,
    return_path,
)
from carepost.templates.context import ContactView
from carepost.templates.rendering import (
    PreparedTemplate,
    RenderedMessage,
    TemplateError,
    compile_content,
    prepare_template,
    render_raw,
)

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
    "build_message",
    "check_sender",
    "compile_content",
    "domain_of",
    "emit_webhook",
    "message_bytes",
    "next_attempt",
    "prepare_template",
    "render_raw",
    "return_path",
    "sign_all",
    "signing_keys_for",
    "transport_from_settings",
]
