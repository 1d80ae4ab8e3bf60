"""REST routes for sending messages and reading the message log (docs/email-api.md).

Sending needs ``messages:send``. The log needs ``reports:read``; recipients,
subjects and metadata show only with ``phi:read`` as well, and every answer that
shows them is audited (``message.view_phi``). A recipient is searched with
``POST /messages/search`` and a JSON body: an address never goes in a URL.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.core.collector import collector_paused
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.runtime import Runtime
from carepost.messages import service
from carepost.messages.schemas import (
    BatchIn,
    BatchOut,
    MessageIn,
    MessageOut,
    MessageSearch,
    SendResult,
)
from carepost.messages.sending import (
    SendContext,
    SendLimits,
    send_with_retry,
)
from carepost.messages.service import MessageFilter

router = APIRouter(prefix="/messages", tags=["messages"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Sender = Annotated[Principal, Depends(require("messages:send"))]
Reader = Annotated[Principal, Depends(require("reports:read"))]
PHI_READ = "phi:read"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A repeat with the same key returns the first result",
    ),
]


def _context(runtime: Runtime, principal: Principal, *, atomic: bool = False) -> SendContext:
    limits = SendLimits.from_settings(runtime.settings)
    return SendContext(actor=principal.actor, limits=limits, atomic=atomic)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Send one message (201; a repeated Idempotency-Key answers 200 with the first)",
    responses={200: {"description": "A repeat of an earlier request", "model": SendResult}},
)
def send_message(
    body: MessageIn,
    response: Response,
    runtime: RuntimeDep,
    principal: Sender,
    idempotency_key: IdempotencyKey = None,
) -> SendResult:
    [result] = send_with_retry(
        lambda: runtime.bound_session(principal.keys),
        principal.keys,
        [(body, idempotency_key)],
        _context(runtime, principal),
    )
    if result.errors:
        prefix = "#/body/items/0/"
        errors = [
            FieldError("#/body/" + e.field.removeprefix(prefix), e.message) for e in result.errors
        ]
        raise ValidationFailed(errors[0].message, errors=errors)
    if result.duplicate:
        response.status_code = status.HTTP_200_OK
    return SendResult(
        id=result.id, state=result.state, reason=result.reason, duplicate=result.duplicate
    )


# The batch body is parsed and validated from its bytes by one TypeAdapter (pydantic-core
# reads the JSON itself): for 10,000 items several times faster than FastAPI's
# ``json.loads`` followed by validating the Python objects. The OpenAPI document
# still shows the model, inlined (no component of its own is registered).
BATCH_BODY: TypeAdapter[BatchIn] = TypeAdapter(BatchIn)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its local ``$defs`` references replaced by the definitions."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


BATCH_BODY_SCHEMA = _inlined(BATCH_BODY.json_schema(mode="validation"))


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _batch_body(raw: bytes, content_type: str | None) -> BatchIn:
    if not _is_json(content_type):
        message = "send the batch as JSON (Content-Type: application/json)"
        raise ValidationFailed(message, errors=[FieldError("#/body", message)])
    try:
        return BATCH_BODY.validate_json(raw)
    except ValidationError as invalid:
        # Located like FastAPI's own body errors; the input (PHI) is left out.
        errors = invalid.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [dict(error) | {"loc": ("body", *error["loc"])} for error in errors]
        ) from None


def _send_batch(
    raw: bytes, content_type: str | None, runtime: Runtime, principal: Principal
) -> Response:
    with collector_paused():
        body = _batch_body(raw, content_type)
        results = send_with_retry(
            lambda: runtime.bound_session(principal.keys),
            principal.keys,
            [(item, item.idempotency_key) for item in body.items],
            _context(runtime, principal, atomic=body.atomic),
        )
    counts = {"queued": 0, "suppressed": 0, "duplicates": 0, "failed": 0}
    for result in results:
        if result.duplicate:
            counts["duplicates"] += 1
        elif result.state == "error":
            counts["failed"] += 1
        elif result.state == "suppressed":
            counts["suppressed"] += 1
        else:
            counts["queued"] += 1
    # Built directly: validating 10,000 result models again would cost more than queuing.
    payload = counts | {"items": [result.as_dict() for result in results]}
    return Response(to_json(payload), media_type="application/json")


@router.post(
    "/batch",
    summary="Send up to 10,000 messages in one transaction; each item gets its own result",
    response_model=BatchOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BATCH_BODY_SCHEMA}},
        }
    },
)
async def send_batch(request: Request, runtime: RuntimeDep, principal: Sender) -> Response:
    raw = await request.body()
    # Parsing, validating and queuing 10,000 messages is CPU work: off the event loop.
    return await run_in_threadpool(
        _send_batch, raw, request.headers.get("content-type"), runtime, principal
    )


def _reject_phi_in_query(request: Request) -> None:
    misplaced = sorted(set(request.query_params) & {"to", "email", "recipient"})
    if misplaced:
        message = "an address never goes in a URL: search with POST /api/v1/messages/search"
        raise ValidationFailed(
            message, errors=[FieldError(f"#/query/{name}", message) for name in misplaced]
        )


def _page(
    runtime: Runtime,
    principal: Principal,
    criteria: MessageFilter,
    cursor: str | None,
    limit: int,
    *,
    via: str,
) -> Page[MessageOut]:
    after = decode_cursor(cursor)
    show_phi = principal.can(PHI_READ)
    with runtime.bound_session(principal.keys) as session:
        found = service.list_messages(
            session, principal.keys, criteria, after=after, limit=limit + 1, with_phi=show_phi
        )
        more = len(found) > limit
        found = found[:limit]
        if show_phi:
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                messages=found,
                via=via,
            )
        return Page[MessageOut](
            items=[service.message_out(m, show_phi=show_phi) for m in found],
            next_cursor=encode_cursor(found[-1].id) if more else None,
        )


@router.get("", summary="List messages, newest first (by state, tag, campaign or contact)")
def list_messages(
    request: Request,
    runtime: RuntimeDep,
    principal: Reader,
    state: Annotated[str | None, Query(max_length=12)] = None,
    tag: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = None,
    campaign_id: uuid.UUID | None = None,
    contact_id: uuid.UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[MessageOut]:
    _reject_phi_in_query(request)
    criteria = MessageFilter(state=state, tag=tag, campaign_id=campaign_id, contact_id=contact_id)
    return _page(runtime, principal, criteria, cursor, limit, via="list")


@router.post("/search", summary="Find messages sent to an address (needs phi:read; audited)")
def search_messages(
    body: MessageSearch, runtime: RuntimeDep, principal: Reader
) -> Page[MessageOut]:
    # Whether an address was written to is itself PHI.
    principal.require(PHI_READ)
    criteria = MessageFilter(to=body.to, state=body.state, tag=body.tag)
    return _page(runtime, principal, criteria, body.cursor, body.limit, via="search")


@router.get("/{message_id}", summary="A message with its events (PHI only with phi:read)")
def get_message(message_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> MessageOut:
    show_phi = principal.can(PHI_READ)
    with runtime.bound_session(principal.keys) as session:
        message = service.get_message(session, principal.tenant_id, message_id)
        events = service.message_events(session, message.id)
        if show_phi:
            service.record_phi_view(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                messages=[message],
                via="get",
            )
        return service.message_out(message, show_phi=show_phi, events=events)
