"""Checks a template must pass when it is saved, before anything is sent with it.

* every part compiles (a syntax error is a :class:`TemplateError` naming the part and
  line); a message has an HTML or a text part; the subject is one line;
* the contact fields it reads exist (``contact.custom.x`` for an undefined ``x`` is
  an error now, not at send time);
* a *marketing* template carries what CAN-SPAM (15 U.S.C. 7704(a)(5)) requires in
  every body it sends, the template's or its layout's: an unsubscribe link
  (``{{ unsubscribe_url }}``, filled per message by the outbox) and the
  organization's postal address, written out or as ``{{ organization.physical_address }}``.

Faults are reported together as one :class:`ValidationFailed` whose errors name the
field at fault (``html``, ``text``, ``layout_id`` …).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from jinja2 import nodes

from carepost.contacts.values import FieldSpec
from carepost.core.errors import FieldError, ValidationFailed
from carepost.templates import analysis
from carepost.templates.models import Layout
from carepost.templates.rendering import compile_content

UNSUBSCRIBE = "unsubscribe_url"
_SPACES = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]*>")


def _normalized(text: str) -> str:
    return _SPACES.sub(" ", _TAGS.sub(" ", text)).strip().lower()


def has_address(sources: list[str], trees: list[nodes.Template], address: str) -> bool:
    """The postal address as a placeholder, or written out (each of its lines, in any
    spacing or markup)."""
    if analysis.refers_to(trees, "organization", "physical_address"):
        return True
    lines = [_normalized(line) for line in address.splitlines() if line.strip()]
    text = _normalized(" ".join(sources))
    return bool(lines) and all(line in text for line in lines)


def check_content(
    *,
    kind: str,
    subject: str,
    html: str | None,
    text: str | None,
    layout: Layout | None,
    schema: Mapping[str, FieldSpec],
    physical_address: str,
    prefix: str = "",
) -> None:
    """Raise TemplateError (syntax) or ValidationFailed (everything else, together)."""
    errors: list[FieldError] = []
    if "\n" in subject or "\r" in subject:
        errors.append(FieldError(f"{prefix}subject", "the subject is one line"))
    if not subject.strip():
        errors.append(FieldError(f"{prefix}subject", "enter a subject"))
    if not (html and html.strip()) and not (text and text.strip()):
        errors.append(FieldError(f"{prefix}html", "give an HTML part, a text part or both"))
    parts = compile_content(subject, html or None, text or None, layout=layout, prefix=prefix)
    for part in parts[:3]:
        if part is None:
            continue
        refs = analysis.contact_references([part.tree])
        for name in analysis.unknown_fields(refs, schema):
            errors.append(
                FieldError(
                    part.part, f"{name} is not a contact field: define it under Contact fields"
                )
            )
    if kind == "marketing":
        errors += _can_spam(html, text, layout, parts, physical_address, prefix)
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)


def _can_spam(
    html: str | None,
    text: str | None,
    layout: Layout | None,
    parts: tuple,  # type: ignore[type-arg]
    physical_address: str,
    prefix: str,
) -> list[FieldError]:
    _subject, html_part, text_part, layout_html, layout_text = parts
    if not physical_address.strip():
        return [
            FieldError(
                "kind",
                "marketing email must show your organization's postal address: "
                "set it in Organization settings first",
            )
        ]
    bodies = []
    if html_part is not None:
        trees = [html_part.tree] + ([layout_html.tree] if layout_html else [])
        sources = [html or ""] + ([layout.html] if layout else [])
        bodies.append((f"{prefix}html", trees, sources))
    if text_part is not None:
        trees = [text_part.tree] + ([layout_text.tree] if layout_text else [])
        sources = [text or ""] + ([layout.text or ""] if layout and layout_text else [])
        bodies.append((f"{prefix}text", trees, sources))
    errors = []
    for field, trees, sources in bodies:
        if UNSUBSCRIBE not in analysis.top_level_names(trees):
            errors.append(
                FieldError(
                    field, "marketing email needs an unsubscribe link: {{ unsubscribe_url }}"
                )
            )
        if not has_address(sources, trees, physical_address):
            errors.append(
                FieldError(
                    field,
                    "marketing email must show your postal address: "
                    "{{ organization.physical_address }}",
                )
            )
    return errors
