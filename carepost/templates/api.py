"""REST routes for email templates (``/templates``), layouts (``/template-layouts``),
versions, A/B variants and previews.

Reading needs ``templates:read``, changing ``templates:write``. A preview against a
real contact shows that contact's PHI only with ``phi:read`` (audited as
``contact.view_phi``, ``via: template_preview``); without it the PHI fields are
masked. Syntax and undefined-variable errors are ``template-error`` problems with
``line`` (and ``variable``) members and a pointer to the part at fault.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.core.runtime import Runtime
from carepost.templates import service
from carepost.templates.schemas import (
    DraftPreviewIn,
    LayoutCreate,
    LayoutOut,
    LayoutUpdate,
    PreviewIn,
    PreviewOut,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
    VariantCreate,
    VariantOut,
    VariantUpdate,
    VersionOut,
)

router = APIRouter(tags=["templates"])
T = TypeVar("T")
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("templates:read"))]
Writer = Annotated[Principal, Depends(require("templates:write"))]
Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=500)]
PHI_READ = "phi:read"


def _page(rows: list[Any], limit: int, out: Callable[[Any], T]) -> Page[T]:
    """One page of ``limit`` items from ``limit + 1`` rows (the extra says there is more)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[T](
        items=[out(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


# --- templates ---------------------------------------------------------------------------


@router.get("/templates", summary="List the templates")
def list_templates(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[TemplateOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_templates(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
    return _page(rows, limit, TemplateOut.of)


@router.post(
    "/templates", status_code=status.HTTP_201_CREATED, summary="Create a template (checked)"
)
def create_template(body: TemplateCreate, runtime: RuntimeDep, principal: Writer) -> TemplateOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.create_template(
            session,
            principal.tenant_id,
            name=body.name,
            kind=body.kind,
            subject=body.subject,
            html=body.html,
            text=body.text,
            layout_id=body.layout_id,
            actor=principal.actor,
        )
        return TemplateOut.of(row)


@router.post(
    "/templates/preview",
    summary="Render unsaved content (the editor's live preview)",
)
def preview_draft(body: DraftPreviewIn, runtime: RuntimeDep, principal: Reader) -> PreviewOut:
    draft = service.Draft(body.kind, body.subject, body.html, body.text, body.layout_id)
    with runtime.bound_session(principal.keys) as session:
        result = service.preview(
            session,
            principal.keys,
            draft=draft,
            contact_id=body.contact_id,
            data=body.data,
            show_phi=principal.can(PHI_READ),
            actor=principal.actor,
        )
    return PreviewOut.of(result.message, phi_shown=result.contact_phi_shown, masked=result.masked)


@router.get("/templates/{template_id}", summary="Get a template")
def get_template(template_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> TemplateOut:
    with runtime.bound_session(principal.keys) as session:
        return TemplateOut.of(service.get_template(session, principal.tenant_id, template_id))


@router.patch("/templates/{template_id}", summary="Change a template (a new version)")
def update_template(
    template_id: uuid.UUID, body: TemplateUpdate, runtime: RuntimeDep, principal: Writer
) -> TemplateOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_template(
            session, principal.tenant_id, template_id, changes=body.changes(), actor=principal.actor
        )
        return TemplateOut.of(row)


@router.delete(
    "/templates/{template_id}",
    summary="Delete a template",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_template(template_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_template(session, principal.tenant_id, template_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/templates/{template_id}/versions", summary="The template's saved versions")
def list_versions(
    template_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> list[VersionOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_versions(session, principal.tenant_id, template_id)
        return [VersionOut.of(row) for row in rows]


@router.post(
    "/templates/{template_id}/preview",
    summary="Render a saved template for a sample or a real contact (PHI with phi:read; audited)",
)
def preview_template(
    template_id: uuid.UUID, body: PreviewIn, runtime: RuntimeDep, principal: Reader
) -> PreviewOut:
    with runtime.bound_session(principal.keys) as session:
        result = service.preview(
            session,
            principal.keys,
            template_id=template_id,
            variant=body.variant,
            contact_id=body.contact_id,
            data=body.data,
            show_phi=principal.can(PHI_READ),
            actor=principal.actor,
        )
    return PreviewOut.of(result.message, phi_shown=result.contact_phi_shown, masked=result.masked)


# --- variants ----------------------------------------------------------------------------


@router.get("/templates/{template_id}/variants", summary="The template's A/B variants")
def list_variants(
    template_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> list[VariantOut]:
    with runtime.bound_session(principal.keys) as session:
        service.get_template(session, principal.tenant_id, template_id)
        rows = service.variants_of(session, principal.tenant_id, template_id)
        return [VariantOut.of(row) for row in rows]


@router.post(
    "/templates/{template_id}/variants",
    status_code=status.HTTP_201_CREATED,
    summary="Add an A/B variant (subject, content or sender name, and its split)",
)
def create_variant(
    template_id: uuid.UUID, body: VariantCreate, runtime: RuntimeDep, principal: Writer
) -> VariantOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.create_variant(
            session,
            principal.tenant_id,
            template_id,
            values=body.model_dump(),
            actor=principal.actor,
        )
        return VariantOut.of(row)


@router.patch("/templates/{template_id}/variants/{variant_id}", summary="Change a variant")
def update_variant(
    template_id: uuid.UUID,
    variant_id: uuid.UUID,
    body: VariantUpdate,
    runtime: RuntimeDep,
    principal: Writer,
) -> VariantOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_variant(
            session,
            principal.tenant_id,
            template_id,
            variant_id,
            changes=body.changes(),
            actor=principal.actor,
        )
        return VariantOut.of(row)


@router.delete(
    "/templates/{template_id}/variants/{variant_id}",
    summary="Remove a variant",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_variant(
    template_id: uuid.UUID, variant_id: uuid.UUID, runtime: RuntimeDep, principal: Writer
) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_variant(
            session, principal.tenant_id, template_id, variant_id, actor=principal.actor
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- layouts -----------------------------------------------------------------------------


@router.get("/template-layouts", summary="List the layouts")
def list_layouts(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[LayoutOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_layouts(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
    return _page(rows, limit, LayoutOut.of)


@router.post(
    "/template-layouts",
    status_code=status.HTTP_201_CREATED,
    summary="Create a layout: a header and footer around {{ content }}",
)
def create_layout(body: LayoutCreate, runtime: RuntimeDep, principal: Writer) -> LayoutOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.create_layout(
            session,
            principal.tenant_id,
            name=body.name,
            html=body.html,
            text=body.text,
            actor=principal.actor,
        )
        return LayoutOut.of(row)


@router.get("/template-layouts/{layout_id}", summary="Get a layout")
def get_layout(layout_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> LayoutOut:
    with runtime.bound_session(principal.keys) as session:
        return LayoutOut.of(service.get_layout(session, principal.tenant_id, layout_id))


@router.patch("/template-layouts/{layout_id}", summary="Change a layout")
def update_layout(
    layout_id: uuid.UUID, body: LayoutUpdate, runtime: RuntimeDep, principal: Writer
) -> LayoutOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_layout(
            session, principal.tenant_id, layout_id, changes=body.changes(), actor=principal.actor
        )
        return LayoutOut.of(row)


@router.delete(
    "/template-layouts/{layout_id}",
    summary="Delete an unused layout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_layout(layout_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> Response:
    with runtime.bound_session(principal.keys) as session:
        service.delete_layout(session, principal.tenant_id, layout_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
