"""Reading a tenant's own rows by id: the one place where "scoped to the tenant" is
spelled for the plain get-by-id and keyset-page reads every domain needs.

Tenancy is enforced in SQL: the ``tenant_id`` condition is part of every
statement, so an id of another tenant's row is simply "not found" (never
"forbidden", which would confirm that it exists).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeVar

from sqlalchemy import Column, inspect, select
from sqlalchemy.orm import Session

from carepost.core.errors import NotFound


class OwnedRow(Protocol):
    """A tenant-owned row with a UUID primary key (``IdMixin`` + ``TenantOwned``)."""

    id: uuid.UUID
    tenant_id: uuid.UUID


Row = TypeVar("Row", bound=OwnedRow)


def _column(model: type[OwnedRow], name: str) -> Column[Any]:
    column: Column[Any] = inspect(model).columns[name]
    return column


def get_owned(
    session: Session, model: type[Row], tenant_id: uuid.UUID, row_id: uuid.UUID, *, missing: str
) -> Row:
    """The tenant's row of ``model`` with this id, or NotFound(``missing``)."""
    query = select(model).where(
        _column(model, "tenant_id") == tenant_id, _column(model, "id") == row_id
    )
    row = session.scalars(query).first()
    if row is None:
        raise NotFound(missing)
    return row


def page_owned(
    session: Session,
    model: type[Row],
    tenant_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
) -> list[Row]:
    """A page of the tenant's rows in id order, after the id ``after`` (keyset paging)."""
    id_column = _column(model, "id")
    query = select(model).where(_column(model, "tenant_id") == tenant_id).order_by(id_column)
    if after is not None:
        query = query.where(id_column > after)
    return list(session.scalars(query.limit(limit)))
