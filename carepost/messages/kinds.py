"""The kinds of message events: one list for the outbox, the contact timeline
(``email.<kind>``), segment rules and webhooks (``message.<kind>``).

A module of its own, importing nothing, so that the contacts, segments and webhooks
domains can read it without importing the outbox.
"""

from __future__ import annotations

MESSAGE_EVENT_KINDS = (
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "failed",
    "suppressed",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "portal",
)
