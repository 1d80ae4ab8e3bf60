"""What webhooks accept and send: event types, endpoint URLs, and which payload keys
are PHI. Pure decisions (no database), used by the service, the API and the console.

* An endpoint URL is ``https``; plain ``http`` only to a loopback host, and only in
  development and test settings. Hosts that are private, link-local or loopback IP
  literals are refused in production (the delivery job re-checks what a name
  resolves to, see :mod:`carepost.webhooks.delivery`).
* Payloads carry no PHI unless the endpoint has ``include_phi``: callers put PHI
  under the payload's ``"phi"`` key, and the keys in :data:`PHI_KEYS` are moved
  there if a caller forgot, so they never reach an endpoint that did not ask.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from carepost.core.errors import ValidationFailed
from carepost.messages.kinds import MESSAGE_EVENT_KINDS

MESSAGE_KINDS = MESSAGE_EVENT_KINDS
EVENT_TYPES = (*(f"message.{kind}" for kind in MESSAGE_KINDS), "webhook.test")
ALL_EVENTS = "*"
# Payload keys that are (or may be) PHI: only endpoints with include_phi receive them.
PHI_KEYS = frozenset(
    {
        "phi",
        "to",
        "to_address",
        "recipient",
        "email",
        "phone",
        "address",
        "subject",
        "name",
        "first_name",
        "last_name",
        "url",
        "diagnostic",
        "body",
        "contact",
    }
)
MAX_URL = 2000
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def normalize_event_type(event_type: str) -> str:
    """``bounced`` -> ``message.bounced``; an unknown type is an error."""
    name = event_type if "." in event_type else f"message.{event_type}"
    if name not in EVENT_TYPES:
        raise ValidationFailed(f"unknown event type {event_type!r}", field="event_type")
    return name


def check_url(url: str, *, allow_loopback_http: bool) -> str:
    """An acceptable endpoint URL, or ValidationFailed saying why not."""
    text = url.strip()
    if len(text) > MAX_URL:
        raise ValidationFailed(f"at most {MAX_URL} characters", field="url")
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise ValidationFailed("not a valid URL", field="url") from None
    del port
    if not host or parts.username or parts.password:
        raise ValidationFailed("needs a host and no user:password part", field="url")
    loopback = host in LOOPBACK_HOSTS or _is_loopback_ip(host)
    if parts.scheme == "http":
        if not (loopback and allow_loopback_http):
            raise ValidationFailed(
                "must use https (http only to a loopback host in development and test)",
                field="url",
            )
    elif parts.scheme != "https":
        raise ValidationFailed("must use https", field="url")
    if not allow_loopback_http and (loopback or _is_internal_ip(host)):
        raise ValidationFailed("must not point to a private or loopback address", field="url")
    return text


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback_ip(host: str) -> bool:
    address = _ip(host)
    return address is not None and address.is_loopback


def _is_internal_ip(host: str) -> bool:
    address = _ip(host)
    return address is not None and not address.is_global


def check_event_types(event_types: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for name in event_types:
        if name == ALL_EVENTS:
            return [ALL_EVENTS]
        normalized = normalize_event_type(name)
        if normalized not in chosen:
            chosen.append(normalized)
    if not chosen:
        raise ValidationFailed("subscribe to at least one event type (or '*')", field="event_types")
    return chosen


def split_phi(payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what any endpoint may see, the PHI only include_phi endpoints get)."""
    safe: dict[str, Any] = {}
    phi: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "phi" and isinstance(value, Mapping):
            phi.update(value)
        elif key in PHI_KEYS:
            phi[key] = value
        else:
            safe[key] = value
    return safe, phi
