"""Bulk writes by the fastest path of each engine: COPY on PostgreSQL, one
``executemany`` on SQLite, with each column's own bind processing (encryption
included), so what is stored is what a Core ``insert()`` would store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.crypto.fields import EncryptedType

Processor = Callable[[Any], Any]
_PROCESSORS: dict[tuple[str, str, tuple[str, ...], bool], list[tuple[int, Processor]]] = {}


def _processors(
    table: Table, columns: tuple[str, ...], dialect: Dialect, presealed: bool = False
) -> list[tuple[int, Processor]]:
    """Each column's own bind processing for ``dialect`` (encryption included), as
    SQLAlchemy would apply it: the values written are exactly those of an ORM insert.
    ``presealed``: the encrypted columns hold ciphertexts already (sealed ahead,
    :mod:`carepost.contacts.sealing`), bytes that are written as they are."""
    cache_key = (dialect.name, table.name, columns, presealed)
    found = _PROCESSORS.get(cache_key)
    if found is None:
        found = []
        for position, name in enumerate(columns):
            column_type = table.c[name].type
            if presealed and isinstance(column_type, EncryptedType):
                # Ciphertexts are bytes, which both drivers store as bytea/BLOB as they
                # are (psycopg in C; its Binary wrapper would be adapted in Python).
                continue
            else:
                processor = column_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                found.append((position, processor))
        _PROCESSORS[cache_key] = found
    return found


@dataclass(frozen=True)
class CopyText:
    """Rows already in COPY's text format, for PostgreSQL (``count`` of them).

    For the token rows, whose values (ids, field keys, hex tokens) hold nothing COPY
    escapes: formatting them once per contact is a few times cheaper than psycopg
    adapting four values per row, and an imported contact has about ten tokens.
    """

    text: str
    count: int


def write_rows(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]] | CopyText,
    *,
    presealed: bool = False,
) -> None:
    """INSERT rows (tuples in the order of ``columns``) by the fastest path of the engine.

    PostgreSQL: one ``COPY … FROM STDIN`` (several times faster than multi-row
    INSERTs, and it needs no statement per chunk). SQLite: one ``executemany`` on
    the driver's cursor (SQLite runs it as a prepared statement in a loop). Both
    skip SQLAlchemy's per-row parameter handling but apply each column's own bind
    processing, so what is stored is byte for byte what a Core ``insert()`` stores
    (encrypted columns are sealed with the keys bound to the unit of work). A unique
    violation is raised as SQLAlchemy's :class:`IntegrityError`, as an INSERT's is.
    ``rows`` may also be :class:`CopyText` on PostgreSQL. ``presealed``: the values of
    the encrypted columns are ciphertexts already (:mod:`carepost.contacts.sealing`).
    """
    if (rows.count if isinstance(rows, CopyText) else len(rows)) == 0:
        return
    names = tuple(columns)
    connection = session.connection()
    dialect = connection.dialect
    assert dialect.name == "postgresql" or not isinstance(rows, CopyText)
    processors = _processors(table, names, dialect, presealed)
    if processors and not isinstance(rows, CopyText):
        processed = []
        for row in rows:
            values = list(row)
            for position, processor in processors:
                value = values[position]
                if value is not None:
                    values[position] = processor(value)
            processed.append(values)
        rows = processed
    driver = connection.connection.driver_connection
    # Names from the table definition only, quoted by the dialect; values travel apart.
    preparer = dialect.identifier_preparer
    target = f"{preparer.format_table(table)} ({', '.join(map(preparer.quote, names))})"
    statement = f"COPY {target} FROM STDIN"
    try:
        if dialect.name == "postgresql":
            with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
                if isinstance(rows, CopyText):
                    copy.write(rows.text)
                else:
                    for row in rows:
                        copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in names)
            statement = f"INSERT INTO {target} VALUES ({marks})"  # noqa: S608
            cursor = driver.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(statement, rows)
            finally:
                cursor.close()
    except dialect.loaded_dbapi.IntegrityError as error:
        raise IntegrityError(statement, None, error) from error
