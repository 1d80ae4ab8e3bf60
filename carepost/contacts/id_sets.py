"""A set of contact ids bound as **one** parameter, for set-based statements.

``column IN (:a, :b, …)`` with 10,000 ids is 10,000 bound parameters (SQLite caps
them, PostgreSQL plans them slowly). Instead the set travels as one value:
PostgreSQL ``column = ANY(:ids)`` with a ``uuid[]``, SQLite ``column IN (SELECT
value FROM json_each(:ids))`` with a JSON array of the ids as SQLite stores them
(32 hex digits). The same convention as the segment compiler's token lists
(docs/contacts-data.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Uuid, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute, Session

Column = ColumnElement[Any] | InstrumentedAttribute[Any]


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def id_in(column: Column, ids: Collection[uuid.UUID], dialect: str) -> ColumnElement[bool]:
    """``column`` is one of ``ids``, whatever their number, as one bound parameter."""
    if dialect == "postgresql":
        values = bindparam(None, sorted(ids), type_=postgresql.ARRAY(Uuid()))
        return column == any_(values)
    encoded = json.dumps(sorted(i.hex for i in ids))
    members = func.json_each(bindparam(None, encoded)).table_valued("value")
    return column.in_(select(members.c.value))


def text_in(column: Column, values: Collection[str], dialect: str) -> ColumnElement[bool]:
    """``column`` is one of these strings (blind-index tokens), as one bound parameter."""
    if dialect == "postgresql":
        array = bindparam(None, sorted(values), type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    members = func.json_each(bindparam(None, json.dumps(sorted(values)))).table_valued("value")
    return column.in_(select(members.c.value))
