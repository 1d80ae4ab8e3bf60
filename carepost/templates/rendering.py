"""Rendering a message from a saved template or from raw content (the outbox's entry points).

:func:`render_template` and :func:`render_raw` return a :class:`RenderedMessage`:
subject, HTML and text parts (the text generated from the HTML when the template has
none), whether PHI was used, and which template and A/B variant it came from.

Order of work for a saved template: the body parts render first in the sandbox
(:mod:`carepost.templates.sandbox`), then the layout renders around them with the
body as ``{{ content }}`` (already escaped, so inserted as is). The subject is one
line: line breaks that a value brings in become spaces (no header injection).

For many messages of one template (a campaign), :func:`prepare_template` reads and
compiles once and :meth:`PreparedTemplate.render` fills each message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.contacts.custom_fields import load_schema
from carepost.core.errors import NotFound
from carepost.crypto.keyring import TenantKeys
from carepost.templates import analysis
from carepost.templates.context import ContactView, build_context
from carepost.templates.models import Layout, Template, TemplateVariant
from carepost.templates.plaintext import html_to_text
from carepost.templates.sandbox import (
    CompiledPart,
    TemplateError,
    compile_part,
    render_part,
    substitution_pieces,
)
from carepost.tenancy.models import Tenant

__all__ = [
    "ContactView",
    "PreparedTemplate",
    "RenderedMessage",
    "TemplateError",
    "prepare_template",
    "render_raw",
    "render_template",
]

_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
MAX_SUBJECT = 998  # RFC 5322 section 2.1.1: a line is at most 998 characters


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str  # always present (generated from html when missing)
    uses_phi: bool  # the template referenced a PHI contact field
    template_id: uuid.UUID | None
    variant: str | None  # A/B variant key, None without variants
    from_name: str | None = None  # the variant's sender name, when it sets one
    # The text part is the HTML's own words (html_to_text of ``html``): the DLP scan
    # of the stored message then reads them once.
    text_from_html: bool = False


@dataclass(frozen=True)
class PreparedTemplate:
    """A template (with its layout and variant) compiled once, to render many messages."""

    subject: CompiledPart
    html: CompiledPart | None
    text: CompiledPart | None
    layout_html: CompiledPart | None = None
    layout_text: CompiledPart | None = None
    uses_phi: bool = False
    template_id: uuid.UUID | None = None
    variant: str | None = None
    from_name: str | None = None
    organization: Mapping[str, str] | None = None

    def parts(self) -> list[CompiledPart]:
        return [
            part
            for part in (self.subject, self.html, self.text, self.layout_html, self.layout_text)
            if part is not None
        ]

    def render(self, *, contact: ContactView | None, data: Mapping[str, Any]) -> RenderedMessage:
        context = build_context(contact, data, self.organization)
        subject = _one_line(render_part(self.subject, context))
        html = html_pieces = None
        if self.html is not None:
            # A substitution's pieces also give its text (TextSkeleton), without parsing.
            html_pieces = substitution_pieces(self.html, context)
            html = (
                "".join(html_pieces) if html_pieces is not None else render_part(self.html, context)
            )
        if html is not None and self.layout_html is not None:
            # The body was rendered with autoescape: it is HTML already.
            body = Markup(html)  # noqa: S704
            html = render_part(self.layout_html, context | {"content": body})
        if self.text is not None:
            text = render_part(self.text, context)
            if self.layout_text is not None:
                text = render_part(self.layout_text, context | {"content": text})
        elif html is not None:
            skeleton = self.html.text if self.html is not None else None
            filled = None
            if skeleton is not None and html_pieces is not None and self.layout_html is None:
                filled = skeleton.fill(html_pieces)
            text = filled if filled is not None else html_to_text(html)
        else:
            raise TemplateError("a message needs an HTML or a text part", part="html")
        return RenderedMessage(
            subject=subject,
            html=html,
            text=text,
            uses_phi=self.uses_phi,
            template_id=self.template_id,
            variant=self.variant,
            from_name=self.from_name,
            text_from_html=self.text is None,
        )


def _one_line(subject: str) -> str:
    line = _LINE_BREAKS.sub(" ", subject).strip()
    if len(line) > MAX_SUBJECT:
        raise TemplateError(f"the subject is longer than {MAX_SUBJECT} characters", part="subject")
    return line


def compile_content(
    subject: str,
    html: str | None,
    text: str | None,
    *,
    layout: Layout | None = None,
    prefix: str = "",
) -> tuple[
    CompiledPart, CompiledPart | None, CompiledPart | None, CompiledPart | None, CompiledPart | None
]:
    """Compile a message's parts; a syntax error names its part and line."""
    compiled_subject = compile_part(subject, part=f"{prefix}subject", html=False)
    compiled_html = compile_part(html, part=f"{prefix}html", html=True) if html else None
    compiled_text = compile_part(text, part=f"{prefix}text", html=False) if text else None
    layout_html = layout_text = None
    if layout is not None:
        layout_html = compile_part(layout.html, part="layout.html", html=True)
        if layout.text:
            layout_text = compile_part(layout.text, part="layout.text", html=False)
    return compiled_subject, compiled_html, compiled_text, layout_html, layout_text


def render_raw(
    subject: str,
    html: str | None,
    text: str | None,
    *,
    contact: ContactView | None,
    data: Mapping[str, Any],
) -> RenderedMessage:
    """Render raw content given with a message; it may use ``{{ }}`` placeholders too.

    ``uses_phi`` is judged without the tenant's field definitions: any custom field
    counts as PHI (see :func:`carepost.templates.analysis.uses_phi`)."""
    parts = compile_content(subject, html, text)
    prepared = PreparedTemplate(
        subject=parts[0],
        html=parts[1],
        text=parts[2],
        uses_phi=analysis.uses_phi(
            analysis.contact_references(p.tree for p in parts if p is not None), {}
        ),
    )
    return prepared.render(contact=contact, data=data)


def load_template(session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Template:
    row = session.scalar(
        select(Template).where(Template.tenant_id == tenant_id, Template.id == template_id)
    )
    if row is None:
        raise NotFound("no such template")
    return row


def load_layout(session: Session, tenant_id: uuid.UUID, layout_id: uuid.UUID) -> Layout:
    row = session.scalar(
        select(Layout).where(Layout.tenant_id == tenant_id, Layout.id == layout_id)
    )
    if row is None:
        raise NotFound("no such layout")
    return row


def load_variant(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID, key: str
) -> TemplateVariant:
    row = session.scalar(
        select(TemplateVariant).where(
            TemplateVariant.tenant_id == tenant_id,
            TemplateVariant.template_id == template_id,
            TemplateVariant.key == key,
        )
    )
    if row is None:
        raise NotFound("no such variant of this template", field="variant")
    return row


def organization_of(session: Session, tenant_id: uuid.UUID) -> dict[str, str]:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such organization")
    return {"name": tenant.name, "physical_address": tenant.physical_address}


def prepare_content(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    subject: str,
    html: str | None,
    text: str | None,
    layout: Layout | None,
    template_id: uuid.UUID | None = None,
    variant: str | None = None,
    from_name: str | None = None,
) -> PreparedTemplate:
    """Compile content of this tenant (saved or a draft) with its layout, judging its
    PHI use by the tenant's field definitions."""
    parts = compile_content(subject, html, text, layout=layout)
    trees = [p.tree for p in parts if p is not None]
    return PreparedTemplate(
        subject=parts[0],
        html=parts[1],
        text=parts[2],
        layout_html=parts[3],
        layout_text=parts[4],
        uses_phi=analysis.uses_phi(
            analysis.contact_references(trees), load_schema(session, tenant_id)
        ),
        template_id=template_id,
        variant=variant,
        from_name=from_name,
        organization=organization_of(session, tenant_id),
    )


def prepare_template(
    session: Session, keys: TenantKeys, template_id: uuid.UUID, *, variant: str | None = None
) -> PreparedTemplate:
    """Read and compile a saved template (and its layout and variant) once."""
    tenant_id = keys.tenant_id
    row = load_template(session, tenant_id, template_id)
    layout = load_layout(session, tenant_id, row.layout_id) if row.layout_id else None
    subject, html, text, from_name = row.subject, row.html, row.text, None
    if variant is not None:
        arm = load_variant(session, tenant_id, template_id, variant)
        subject = arm.subject or subject
        # A variant's content replaces the whole body (HTML and text together).
        if arm.html or arm.text:
            html, text = arm.html, arm.text
        from_name = arm.from_name
    return prepare_content(
        session,
        tenant_id,
        subject=subject,
        html=html,
        text=text,
        layout=layout,
        template_id=row.id,
        variant=variant,
        from_name=from_name,
    )


def render_template(
    session: Session,
    keys: TenantKeys,
    template_id: uuid.UUID,
    *,
    contact: ContactView | None,
    data: Mapping[str, Any],
    variant: str | None = None,
) -> RenderedMessage:
    """Render one message from a saved template (see :func:`prepare_template` for many)."""
    prepared = prepare_template(session, keys, template_id, variant=variant)
    return prepared.render(contact=contact, data=data)
