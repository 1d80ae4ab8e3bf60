"""Cursor pagination: opaque cursors that encode the last id seen (UUIDv7 ids sort by time)."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Generic, TypeVar

from pydantic import BaseModel

from carepost.core.errors import ValidationFailed

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> uuid.UUID | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (binascii.Error, ValueError):
        raise ValidationFailed("the cursor is not valid", field="#/query/cursor") from None
