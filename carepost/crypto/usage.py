"""Where encrypted values live, and which data key versions seal them.

Every column of an :class:`~carepost.crypto.fields.EncryptedType` in the schema is
found by type, so a new PHI column is rotated and counted without being listed
anywhere. Counting uses only the plaintext header of each value (format byte and
key version, see :func:`~carepost.crypto.keyring.sealed_header`), in SQL over the
table: no value is decrypted or leaves the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, LargeBinary, MetaData, Table, func, literal, or_, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from carepost import schema
from carepost.core.errors import ConfigError
from carepost.crypto.fields import EncryptedType
from carepost.crypto.keyring import sealed_header


@dataclass(frozen=True)
class EncryptedTable:
    """A table with encrypted columns, and each column's AAD label."""

    table: Table
    columns: tuple[Column[Any], ...]
    labels: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name


def encrypted_tables(metadata: MetaData = schema.metadata) -> list[EncryptedTable]:
    """Every table with a column of an :class:`EncryptedType`, in dependency order."""
    found: list[EncryptedTable] = []
    for table in metadata.sorted_tables:
        columns: list[Column[Any]] = []
        labels: list[str] = []
        for column in table.columns:
            if isinstance(column.type, EncryptedType):
                columns.append(column)
                labels.append(column.type.label)
        if not columns:
            continue
        if "tenant_id" not in table.c or "id" not in table.c:
            raise ConfigError(
                f"table {table.name} has encrypted columns but no tenant_id and id columns, "
                "so key rotation cannot walk it"
            )
        found.append(EncryptedTable(table, tuple(columns), tuple(labels)))
    return found


def sealed_before(column: Column[Any], version: int) -> ColumnElement[bool]:
    """SQL: the column holds a value sealed with a key version older than ``version``.

    Headers compare bytewise in version order (see ``sealed_header``); NULL never matches.
    """
    header = sealed_header(version)
    prefix = func.substr(type_coerce(column, LargeBinary), 1, len(header))
    return prefix < literal(header, LargeBinary)


def sealed_with(column: Column[Any], versions: list[int]) -> ColumnElement[bool]:
    prefix = func.substr(type_coerce(column, LargeBinary), 1, len(sealed_header(1)))
    return or_(*[prefix == literal(sealed_header(v), LargeBinary) for v in versions])


def _count_rows(
    session: Session,
    tenant_id: uuid.UUID,
    tables: list[EncryptedTable],
    condition: Callable[[Column[Any]], ColumnElement[bool]],
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for target in tables:
        table = target.table
        matched = session.scalar(
            select(func.count())
            .select_from(table)
            .where(table.c.tenant_id == tenant_id, or_(*[condition(c) for c in target.columns]))
        )
        if matched:
            counts[target.name] = int(matched)
    return counts


def count_rows_before(
    session: Session, tenant_id: uuid.UUID, version: int, tables: list[EncryptedTable] | None = None
) -> dict[str, int]:
    """Per table, how many of a tenant's rows hold a value sealed before ``version``."""
    return _count_rows(
        session,
        tenant_id,
        encrypted_tables() if tables is None else tables,
        lambda column: sealed_before(column, version),
    )


def count_rows_sealed_with(
    session: Session,
    tenant_id: uuid.UUID,
    versions: list[int],
    tables: list[EncryptedTable] | None = None,
) -> dict[str, int]:
    """Per table, how many of a tenant's rows hold a value sealed with one of ``versions``."""
    return _count_rows(
        session,
        tenant_id,
        encrypted_tables() if tables is None else tables,
        lambda column: sealed_with(column, versions),
    )
