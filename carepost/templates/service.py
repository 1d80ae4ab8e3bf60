"""Templates, layouts and A/B variants: create, read, change, delete, preview.

Every query filters on the tenant, so another organization's template is simply
"not found". Content is checked when saved (:mod:`carepost.templates.validation`);
every save keeps a :class:`TemplateVersion` and an audit event naming the fields
changed (never content: it is the organization's, but it is long and changes
often; the versions hold it).

Preview renders against a sample contact. A real contact's values are shown only to
a viewer allowed PHI (``phi:read``) and each such preview is audited as
``contact.view_phi`` (``via: template_preview``); for anyone else the contact's PHI
fields are replaced by ``[field name]`` placeholders before rendering, so the preview
itself never holds them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import service as contacts
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.templates.context import ContactView
from carepost.templates.models import KINDS, Layout, Template, TemplateVariant, TemplateVersion
from carepost.templates.rendering import (
    PreparedTemplate,
    RenderedMessage,
    load_layout,
    load_template,
    load_variant,
    organization_of,
    prepare_content,
    prepare_template,
)
from carepost.templates.sandbox import compile_part
from carepost.templates.validation import check_content
from carepost.templates.variants import METRICS

MAX_TEMPLATES = 2000
MAX_VARIANTS = 10
CONTENT_FIELDS = ("name", "kind", "subject", "html", "text", "layout_id")
# What a preview fills in where the outbox fills per-message links.
PREVIEW_LINKS = {
    "unsubscribe_url": "https://example.invalid/unsubscribe",
    "preferences_url": "https://example.invalid/preferences",
    "view_in_browser_url": "https://example.invalid/view",
}
SAMPLE_CONTACT = ContactView(
    id=None,
    fields={
        "first_name": "Alex",
        "last_name": "Sample",
        "email": "alex.sample@example.org",
        "phone": "+14155550100",
        "birth_date": "1980-01-01",
        "external_id": "SAMPLE-1",
        "journey_stage": "active",
        "language": "en",
    },
)


def _flush_unique(session: Session, row: Any, *, what: str) -> None:
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(f"another {what} has this name", field="name") from None


def _name_taken(
    session: Session, model: Any, tenant_id: uuid.UUID, name: str, exclude: uuid.UUID | None
) -> None:
    query = select(model.id).where(model.tenant_id == tenant_id, model.name == name)
    if exclude is not None:
        query = query.where(model.id != exclude)
    with session.no_autoflush:
        if session.scalar(query) is not None:
            what = "layout" if model is Layout else "template"
            raise Conflict(f"another {what} has this name", field="name")


def _physical_address(session: Session, tenant_id: uuid.UUID) -> str:
    return organization_of(session, tenant_id)["physical_address"]


def _check(session: Session, tenant_id: uuid.UUID, row: Template) -> None:
    if row.kind not in KINDS:
        raise ValidationFailed("a template is transactional or marketing", field="kind")
    layout = load_layout(session, tenant_id, row.layout_id) if row.layout_id else None
    check_content(
        kind=row.kind,
        subject=row.subject,
        html=row.html,
        text=row.text,
        layout=layout,
        schema=load_schema(session, tenant_id),
        physical_address=_physical_address(session, tenant_id),
    )
    for arm in variants_of(session, tenant_id, row.id):
        _check_variant(session, tenant_id, row, arm, layout, prefix="variant.")


def _check_variant(
    session: Session,
    tenant_id: uuid.UUID,
    row: Template,
    arm: TemplateVariant,
    layout: Layout | None,
    *,
    prefix: str = "",
) -> None:
    """Check the message a variant sends; faults point at the variant's own fields
    (``prefix`` says where they sit in the request: ``variant.`` from a template save)."""
    body = (arm.html, arm.text) if (arm.html or arm.text) else (row.html, row.text)
    check_content(
        kind=row.kind,
        subject=arm.subject or row.subject,
        html=body[0],
        text=body[1],
        layout=layout,
        schema=load_schema(session, tenant_id),
        physical_address=_physical_address(session, tenant_id),
        prefix=prefix,
    )


def _apply(row: Any, changes: Mapping[str, Any], *, clearable: tuple[str, ...]) -> list[str]:
    """Set the changed attributes (``""`` clears the ``clearable`` ones); their names."""
    changed = []
    for name, value in changes.items():
        if name in clearable and value == "":
            value = None
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


def _delete(
    session: Session,
    row: Any,
    *,
    tenant_id: uuid.UUID,
    actor: audit.Actor,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Delete a row and audit it in the same unit of work."""
    session.delete(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        details=dict(details) if details is not None else None,
    )


# --- templates ---------------------------------------------------------------------------


def list_templates(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None = None, limit: int = 100
) -> list[Template]:
    query = select(Template).where(Template.tenant_id == tenant_id).order_by(Template.id)
    if after is not None:
        query = query.where(Template.id > after)
    return list(session.scalars(query.limit(limit)))


def get_template(session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Template:
    return load_template(session, tenant_id, template_id)


def _keep_version(session: Session, row: Template, actor: audit.Actor) -> None:
    session.add(
        TemplateVersion(
            tenant_id=row.tenant_id,
            template_id=row.id,
            version=row.version,
            name=row.name,
            kind=row.kind,
            subject=row.subject,
            html=row.html,
            text=row.text,
            layout_id=row.layout_id,
            actor_type=actor.type,
            actor_id=actor.id,
        )
    )


def create_template(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    kind: str,
    subject: str,
    html: str | None,
    text: str | None,
    layout_id: uuid.UUID | None = None,
    actor: audit.Actor,
) -> Template:
    _name_taken(session, Template, tenant_id, name, None)
    count = session.scalar(
        select(func.count()).select_from(Template).where(Template.tenant_id == tenant_id)
    )
    if (count or 0) >= MAX_TEMPLATES:
        raise Conflict(f"an organization has at most {MAX_TEMPLATES} templates")
    row = Template(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        kind=kind,
        subject=subject,
        html=html or None,
        text=text or None,
        layout_id=layout_id,
        version=1,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    _check(session, tenant_id, row)
    _flush_unique(session, row, what="template")
    _keep_version(session, row, actor)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template.create",
        object_type="template",
        object_id=row.id,
        details={"kind": kind, "version": 1},
    )
    return row


def update_template(
    session: Session,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> Template:
    """Apply changes (content fields and the A/B settings); a content change makes a
    new version. ``html``/``text``/``layout_id`` may be set to None to clear them."""
    row = load_template(session, tenant_id, template_id)
    if "name" in changes and changes["name"] != row.name:
        _name_taken(session, Template, tenant_id, changes["name"], row.id)
    changed = _apply(row, changes, clearable=("html", "text"))
    if not changed:
        return row
    if "ab_metric" in changed and row.ab_metric not in METRICS:
        raise ValidationFailed("the winner is chosen by opens or clicks", field="ab_metric")
    with session.no_autoflush:
        _check(session, tenant_id, row)
    content = [name for name in changed if name in CONTENT_FIELDS]
    if content:
        row.version += 1
        _keep_version(session, row, actor)
    row.updated_at = utcnow()
    row.updated_by_type, row.updated_by_id = actor.type, actor.id
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template.update",
        object_type="template",
        object_id=row.id,
        details={"fields": sorted(changed), "version": row.version},
    )
    return row


def delete_template(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    row = load_template(session, tenant_id, template_id)
    _delete(
        session,
        row,
        tenant_id=tenant_id,
        actor=actor,
        action="template.delete",
        object_type="template",
        object_id=row.id,
    )


def list_versions(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID
) -> list[TemplateVersion]:
    load_template(session, tenant_id, template_id)
    query = (
        select(TemplateVersion)
        .where(TemplateVersion.tenant_id == tenant_id, TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.version.desc())
    )
    return list(session.scalars(query))


# --- layouts -----------------------------------------------------------------------------


def _check_layout(html: str, text: str | None) -> None:
    errors = []
    html_part = compile_part(html, part="html", html=True)
    if "content" not in _names(html_part.tree):
        errors.append("html")
    if text:
        text_part = compile_part(text, part="text", html=False)
        if "content" not in _names(text_part.tree):
            errors.append("text")
    if errors:
        raise ValidationFailed(
            "a layout shows the template's body where it says {{ content }}", field=errors[0]
        )


def _names(tree: Any) -> set[str]:
    from jinja2 import meta

    return set(meta.find_undeclared_variables(tree))


def list_layouts(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None = None, limit: int = 100
) -> list[Layout]:
    query = select(Layout).where(Layout.tenant_id == tenant_id).order_by(Layout.id)
    if after is not None:
        query = query.where(Layout.id > after)
    return list(session.scalars(query.limit(limit)))


def get_layout(session: Session, tenant_id: uuid.UUID, layout_id: uuid.UUID) -> Layout:
    return load_layout(session, tenant_id, layout_id)


def create_layout(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    html: str,
    text: str | None,
    actor: audit.Actor,
) -> Layout:
    _check_layout(html, text)
    _name_taken(session, Layout, tenant_id, name, None)
    row = Layout(id=new_id(), tenant_id=tenant_id, name=name, html=html, text=text or None)
    _flush_unique(session, row, what="layout")
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template_layout.create",
        object_type="template_layout",
        object_id=row.id,
    )
    return row


def update_layout(
    session: Session,
    tenant_id: uuid.UUID,
    layout_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> Layout:
    """Change a layout; every marketing template using it must still pass CAN-SPAM."""
    row = load_layout(session, tenant_id, layout_id)
    if "name" in changes and changes["name"] != row.name:
        _name_taken(session, Layout, tenant_id, changes["name"], row.id)
    changed = _apply(row, changes, clearable=("text",))
    if not changed:
        return row
    _check_layout(row.html, row.text)
    with session.no_autoflush:
        users = session.scalars(
            select(Template).where(Template.tenant_id == tenant_id, Template.layout_id == row.id)
        )
        for template in users:
            try:
                _check(session, tenant_id, template)
            except ValidationFailed as exc:
                raise Conflict(
                    f"the template {template.name!r} would break: {exc.detail}", field="html"
                ) from None
    row.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template_layout.update",
        object_type="template_layout",
        object_id=row.id,
        details={"fields": sorted(changed)},
    )
    return row


def delete_layout(
    session: Session, tenant_id: uuid.UUID, layout_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    row = load_layout(session, tenant_id, layout_id)
    used = session.scalar(
        select(func.count())
        .select_from(Template)
        .where(Template.tenant_id == tenant_id, Template.layout_id == row.id)
    )
    if used:
        raise Conflict(f"{used} template(s) use this layout: change them first")
    _delete(
        session,
        row,
        tenant_id=tenant_id,
        actor=actor,
        action="template_layout.delete",
        object_type="template_layout",
        object_id=row.id,
    )


# --- A/B variants ------------------------------------------------------------------------


def variants_of(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID
) -> list[TemplateVariant]:
    query = (
        select(TemplateVariant)
        .where(TemplateVariant.tenant_id == tenant_id, TemplateVariant.template_id == template_id)
        .order_by(TemplateVariant.key)
    )
    return list(session.scalars(query))


def _check_split(session: Session, row: Template, arm: TemplateVariant) -> None:
    others = [v for v in variants_of(session, row.tenant_id, row.id) if v.id != arm.id]
    if len(others) >= MAX_VARIANTS:
        raise Conflict(f"a template has at most {MAX_VARIANTS} variants")
    if any(v.key == arm.key for v in others):
        raise Conflict("another variant of this template has this key", field="key")
    if not 0 <= arm.percent <= 100:
        raise ValidationFailed("a split is 0 to 100 percent", field="percent")
    if sum(v.percent for v in others) + arm.percent > 100:
        raise ValidationFailed("the variants' splits add up to more than 100 %", field="percent")


def create_variant(
    session: Session,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    *,
    values: Mapping[str, Any],
    actor: audit.Actor,
) -> TemplateVariant:
    row = load_template(session, tenant_id, template_id)
    arm = TemplateVariant(id=new_id(), tenant_id=tenant_id, template_id=row.id, **values)
    with session.no_autoflush:
        _check_split(session, row, arm)
        layout = load_layout(session, tenant_id, row.layout_id) if row.layout_id else None
        _check_variant(session, tenant_id, row, arm, layout)
    session.add(arm)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template.variant_create",
        object_type="template",
        object_id=row.id,
        details={"variant": arm.key, "percent": arm.percent},
    )
    return arm


def get_variant(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID, variant_id: uuid.UUID
) -> TemplateVariant:
    load_template(session, tenant_id, template_id)
    arm = session.scalar(
        select(TemplateVariant).where(
            TemplateVariant.tenant_id == tenant_id,
            TemplateVariant.template_id == template_id,
            TemplateVariant.id == variant_id,
        )
    )
    if arm is None:
        from carepost.core.errors import NotFound

        raise NotFound("no such variant")
    return arm


def update_variant(
    session: Session,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    variant_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> TemplateVariant:
    arm = get_variant(session, tenant_id, template_id, variant_id)
    row = load_template(session, tenant_id, template_id)
    changed = _apply(arm, changes, clearable=("subject", "html", "text", "from_name"))
    if not changed:
        return arm
    with session.no_autoflush:
        _check_split(session, row, arm)
        layout = load_layout(session, tenant_id, row.layout_id) if row.layout_id else None
        _check_variant(session, tenant_id, row, arm, layout)
    arm.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template.variant_update",
        object_type="template",
        object_id=row.id,
        details={"variant": arm.key, "fields": sorted(changed)},
    )
    return arm


def delete_variant(
    session: Session,
    tenant_id: uuid.UUID,
    template_id: uuid.UUID,
    variant_id: uuid.UUID,
    *,
    actor: audit.Actor,
) -> None:
    arm = get_variant(session, tenant_id, template_id, variant_id)
    _delete(
        session,
        arm,
        tenant_id=tenant_id,
        actor=actor,
        action="template.variant_delete",
        object_type="template",
        object_id=template_id,
        details={"variant": arm.key},
    )


def record_winner(
    session: Session, tenant_id: uuid.UUID, template_id: uuid.UUID, key: str, *, actor: audit.Actor
) -> Template:
    """Store the A/B test's winner (from :func:`carepost.templates.variants.choose_winner`)."""
    row = load_template(session, tenant_id, template_id)
    load_variant(session, tenant_id, template_id, key)
    row.ab_winner, row.ab_decided_at = key, utcnow()
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="template.winner",
        object_type="template",
        object_id=row.id,
        details={"variant": key, "metric": row.ab_metric},
    )
    return row


# --- preview -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """Unsaved content to preview (the editor's live preview)."""

    kind: str
    subject: str
    html: str | None
    text: str | None
    layout_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Preview:
    message: RenderedMessage
    contact_phi_shown: bool  # a real contact's PHI is in the message (audited)
    masked: bool  # the contact's PHI fields were replaced by placeholders


def masked_view(view: ContactView, phi_custom: set[str]) -> ContactView:
    """The contact with each PHI value replaced by ``[field]``."""
    fields = {
        name: (f"[{name}]" if name in STANDARD_FIELDS and STANDARD_FIELDS[name].phi else value)
        for name, value in view.fields.items()
    }
    custom = {
        key: (f"[{key}]" if key in phi_custom else value) for key, value in view.custom.items()
    }
    return ContactView(id=view.id, fields=fields, custom=custom)


def _prepare_draft(session: Session, keys: TenantKeys, draft: Draft) -> PreparedTemplate:
    tenant_id = keys.tenant_id
    layout = load_layout(session, tenant_id, draft.layout_id) if draft.layout_id else None
    return prepare_content(
        session,
        tenant_id,
        subject=draft.subject,
        html=draft.html or None,
        text=draft.text or None,
        layout=layout,
    )


def preview(
    session: Session,
    keys: TenantKeys,
    *,
    template_id: uuid.UUID | None = None,
    draft: Draft | None = None,
    variant: str | None = None,
    contact_id: uuid.UUID | None = None,
    data: Mapping[str, Any] | None = None,
    show_phi: bool,
    actor: audit.Actor,
) -> Preview:
    """Render a saved template (or a draft) for a sample or a real contact."""
    if draft is not None:
        prepared = _prepare_draft(session, keys, draft)
    elif template_id is not None:
        prepared = prepare_template(session, keys, template_id, variant=variant)
    else:
        raise ValidationFailed("preview a template or a draft", field="template_id")
    values = PREVIEW_LINKS | dict(data or {})
    if contact_id is None:
        message = prepared.render(contact=SAMPLE_CONTACT, data=values)
        return Preview(message, contact_phi_shown=False, masked=False)
    contact = contacts.get_contact(session, keys.tenant_id, contact_id, with_phi=True)
    schema = load_schema(session, keys.tenant_id)
    view = ContactView.of(contact, list(schema))
    if not show_phi:
        phi_custom = {key for key, spec in schema.items() if spec.phi}
        message = prepared.render(contact=masked_view(view, phi_custom), data=values)
        return Preview(message, contact_phi_shown=False, masked=True)
    message = prepared.render(contact=view, data=values)
    if message.uses_phi:
        contacts.record_phi_view(
            session,
            tenant_id=keys.tenant_id,
            actor=actor,
            contacts=[contact],
            via="template_preview",
        )
    return Preview(message, contact_phi_shown=message.uses_phi, masked=False)
