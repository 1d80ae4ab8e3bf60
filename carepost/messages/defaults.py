"""Working stand-ins for the parts of the email engine the outbox calls (see ports.py).

Each follows the contract of the module that replaces it at merge, kept small:

* rendering of raw content with ``{{ }}`` placeholders in Jinja2's sandbox with
  ``StrictUndefined`` (an unknown variable is an error, never an empty string);
* an RFC 5322 message built with the standard ``email`` package (policy SMTP:
  CRLF line ends, RFC 2047 encoded words for non-ASCII names and subjects);
* a smarthost transport over aiosmtplib (RFC 5321) that reuses its connection and
  turns every connection-level failure into a ``deferred`` outcome;
* an exponential backoff with jitter bounded by the message lifetime.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from html import unescape
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape
from sqlalchemy.orm import Session

from carepost.contacts.models import Contact
from carepost.core.errors import CarepostError, ValidationFailed
from carepost.crypto.keyring import TenantKeys

MAX_RENDERED_CHARS = 2_000_000
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")

# --- templates: rendering ---------------------------------------------------------


class TemplateError(CarepostError):
    """The message content cannot be rendered."""

    code = "template-error"
    status = 422
    title = "Template error"


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str
    uses_phi: bool
    template_id: uuid.UUID | None = None
    variant: str | None = None


_TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


@dataclass(frozen=True)
class _Compiled:
    render: Any
    variables: frozenset[str]


@lru_cache(maxsize=512)
def _compile(source: str, html: bool, part: str) -> _Compiled:
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        tree = env.parse(source)
        template = env.from_string(tree)
    except TemplateSyntaxError as exc:
        error = TemplateError(f"{part}: template syntax error on line {exc.lineno}: {exc.message}")
        error.extensions = {"part": part, "line": str(exc.lineno)}
        raise error from None
    return _Compiled(template.render, frozenset(meta.find_undeclared_variables(tree)))


def _undefined_name(exc: UndefinedError) -> str:
    # Jinja2 says "'name' is undefined" or "'dict object' has no attribute 'name'".
    found = re.findall(r"'([^']*)'", str(exc.message or ""))
    return found[-1] if found else ""


# ``{{ name }}`` or ``{{ name.key }}`` and nothing else: most transactional content.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}\}")
_JINJA_SYNTAX = re.compile(r"\{[{%#]")


@lru_cache(maxsize=512)
def _simple(source: str) -> bool:
    """Whether every Jinja construct in ``source`` is a plain placeholder."""
    return _JINJA_SYNTAX.search(_PLACEHOLDER.sub("", source)) is None


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _substitute(source: str, html: bool, context: Mapping[str, Any]) -> str | None:
    """The placeholders filled in, exactly as the sandbox renders them (None, True and
    numbers as ``str`` does; HTML escaped by markupsafe like autoescape); None when a
    value is not plain data and the engine must decide."""

    def value(match: re.Match[str]) -> str:
        name, key = match.group(1), match.group(2)
        if name not in context:
            raise _Missing(name)
        found = context[name]
        if key is not None:
            if not isinstance(found, Mapping):
                raise TypeError  # attribute access on an object: the sandbox decides
            if key not in found:
                raise _Missing(key)
            found = found[key]
        if not isinstance(found, str | int | float | bool | None):
            raise TypeError  # lists, dicts: let the engine format them
        return str(escape(found)) if html else str(found)

    try:
        return _PLACEHOLDER.sub(value, source)
    except TypeError:
        return None


def _unknown(part: str, name: str) -> TemplateError:
    error = TemplateError(
        f"{part}: unknown variable '{name}'; pass it in data or give it a | default(...)"
    )
    error.extensions = {"part": part, "variable": name}
    return error


def _render_part(source: str, html: bool, part: str, context: Mapping[str, Any]) -> str:
    if "{" not in source:  # nothing to substitute: skip the engine
        return source
    if _simple(source):
        try:
            fast = _substitute(source, html, context)
        except _Missing as missing:
            raise _unknown(part, missing.name) from None
        if fast is not None:
            return fast
    compiled = _compile(source, html, part)
    try:
        output = str(compiled.render(context))
    except UndefinedError as exc:
        raise _unknown(part, _undefined_name(exc)) from None
    except CarepostError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user content is the user's
        error = TemplateError(f"{part}: the template failed to render ({type(exc).__name__})")
        error.extensions = {"part": part}
        raise error from None
    if len(output) > MAX_RENDERED_CHARS:
        raise TemplateError(f"{part}: the rendered content exceeds {MAX_RENDERED_CHARS} characters")
    return output


_SKIPPED = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<(?:br|/?p|/?div|/?li|/?tr|/?h[1-6])\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def text_of_html(html: str) -> str:
    """A plain-text part for an HTML-only message: the text, with line breaks kept."""
    without = _TAG.sub("", _BREAK.sub("\n", _SKIPPED.sub("", html)))
    lines = (" ".join(unescape(line).split()) for line in without.splitlines())
    return "\n".join(line for line in lines if line).strip()


def render_raw(
    subject: str,
    html: str | None,
    text: str | None,
    *,
    contact: Mapping[str, Any] | None,
    data: Mapping[str, Any],
) -> RenderedMessage:
    """Render raw content; ``{{ contact.first_name }}`` and ``{{ anything_in_data }}``."""
    context: dict[str, Any] = dict(data)
    if contact is not None:
        context["contact"] = contact
    rendered_subject = _render_part(subject, False, "subject", context)
    rendered_html = _render_part(html, True, "html", context) if html is not None else None
    if text is not None:
        rendered_text = _render_part(text, False, "text", context)
    else:
        rendered_text = text_of_html(rendered_html or "")
    uses_phi = any(
        "contact" in _compile(source, is_html, part).variables
        for source, is_html, part in (
            (subject, False, "subject"),
            (html or "", True, "html"),
            (text or "", False, "text"),
        )
        if "{" in source
    )
    # A header is one line: a placeholder must not smuggle in another header.
    rendered_subject = " ".join(rendered_subject.split())
    return RenderedMessage(rendered_subject, rendered_html, rendered_text, uses_phi)


def contact_view(contact: Contact) -> dict[str, Any]:
    """A contact as templates see it (templates: ``ContactView.of``): its fields by
    name, missing ones empty."""
    custom = dict(contact.custom or {})
    view: dict[str, Any] = dict(custom)
    view.update(
        {
            "id": str(contact.id),
            "email": contact.email or "",
            "phone": contact.phone or "",
            "external_id": contact.external_id or "",
            "first_name": contact.first_name or "",
            "last_name": contact.last_name or "",
            "birth_date": contact.birth_date or "",
            "language": contact.language or "",
            "journey_stage": contact.journey_stage,
            "timezone": contact.timezone or "",
            "custom": custom,
        }
    )
    return view


def render_template(
    session: Session,
    keys: TenantKeys,
    template_id: uuid.UUID,
    *,
    contact: Mapping[str, Any] | None,
    data: Mapping[str, Any],
    variant: str | None = None,
) -> RenderedMessage:
    raise ValidationFailed(
        "stored templates are not available yet: send subject and html or text",
        field="template_id",
    )


# --- feedback and domains ------------------------------------------------------------


def return_path(message_id: uuid.UUID, *, from_address: str) -> str:
    """The envelope sender (MAIL FROM); VERP addresses replace it with feedback."""
    return from_address


def emit_webhook(
    session: Session, tenant_id: uuid.UUID, event_type: str, payload: Mapping[str, Any]
) -> int:
    """Webhook deliveries written for the event; none until feedback lands."""
    return 0


def check_sender(session: Session, tenant_id: uuid.UUID, from_address: str) -> str | None:
    """Why the tenant may not send from this address, or None. Until sending domains
    land every syntactically valid address is the tenant's."""
    return None
