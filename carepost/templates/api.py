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

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

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


def _item_routes(
    path: str,
    *,
    noun: str,
    fetch: Callable[[Session, uuid.UUID, uuid.UUID], Any],
    change: Callable[..., Any],
    remove: Callable[..., None],
    out_model: type[TemplateOut] | type[LayoutOut],
    update_model: type[BaseModel],
    change_summary: str,
    delete_summary: str | None = None,
) -> None:
    """Register GET, PATCH and DELETE on one record (a template or a layout).

    Both kinds read, change and delete alike: one tenant-bound session, the service
    call, the record's schema out. The handlers take the path's id through ``Path``
    with the path's own name as alias, so the OpenAPI document keeps ``template_id``
    and ``layout_id``; the update body's model is set on the handler's annotations,
    because a name local to this function cannot be resolved from a string."""
    id_name = path.rsplit("{", 1)[1].rstrip("}")
    ItemId = Annotated[uuid.UUID, Path(alias=id_name)]
    out = out_model.of

    def get_item(item_id: ItemId, runtime: RuntimeDep, principal: Reader) -> Any:
        with runtime.bound_session(principal.keys) as session:
            return out(fetch(session, principal.tenant_id, item_id))

    def update_item(item_id: ItemId, body: Any, runtime: RuntimeDep, principal: Writer) -> Any:
        with runtime.bound_session(principal.keys) as session:
            row = change(
                session, principal.tenant_id, item_id, changes=body.changes(), actor=principal.actor
            )
            return out(row)

    def delete_item(item_id: ItemId, runtime: RuntimeDep, principal: Writer) -> Response:
        with runtime.bound_session(principal.keys) as session:
            remove(session, principal.tenant_id, item_id, actor=principal.actor)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    hints = {"item_id": ItemId, "runtime": RuntimeDep, "principal": Reader, "return": Any}
    get_item.__annotations__ = hints
    update_item.__annotations__ = {**hints, "principal": Writer, "body": update_model}
    delete_item.__annotations__ = {**hints, "principal": Writer, "return": Response}
    name = noun.split()[-1]
    for handler, verb in ((get_item, "get"), (update_item, "update"), (delete_item, "delete")):
        handler.__name__ = f"{verb}_{name}"
    router.get(path, summary=f"Get {noun}", response_model=out_model)(get_item)
    router.patch(path, summary=change_summary, response_model=out_model)(update_item)
    router.delete(
        path,
        summary=delete_summary or f"Delete {noun}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
    )(delete_item)


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


_item_routes(
    "/templates/{template_id}",
    noun="a template",
    fetch=service.get_template,
    change=service.update_template,
    remove=service.delete_template,
    out_model=TemplateOut,
    update_model=TemplateUpdate,
    change_summary="Change a template (a new version)",
)


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


_item_routes(
    "/template-layouts/{layout_id}",
    noun="a layout",
    fetch=service.get_layout,
    change=service.update_layout,
    remove=service.delete_layout,
    out_model=LayoutOut,
    update_model=LayoutUpdate,
    change_summary="Change a layout",
    delete_summary="Delete an unused layout",
)
