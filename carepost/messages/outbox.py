"""Writing accepted messages into the outbox table: one statement per batch, streamed.

PostgreSQL: one ``COPY messages (…) FROM STDIN (FORMAT BINARY)``. A message row is
mostly ciphertext (recipient, subject, body, data), stored as ``bytea``; COPY's text
format sends every byte as two hex digits that the server parses back, which made
the text COPY of the messages about half of the request's write cost. In the binary
format each value travels as its bytes. Binary COPY must name each column's exact
type (``json`` is not ``jsonb``, ``smallint`` is not ``integer``), so the types are
read from the catalog for the table the statement resolves to (one query a batch).

SQLite: one ``executemany`` (:func:`carepost.core.bulk.write_rows`).

The PHI columns come sealed already (:class:`Sealer`: the same plaintext bytes as the
columns' own types, :class:`~carepost.crypto.fields.EncryptedString` and
:class:`~carepost.crypto.fields.EncryptedJSON`, sealed under the same label, so the
ORM reads them back as usual). The other columns get their own bind processing, as
a Core ``insert()`` would (UTC timestamps); on PostgreSQL the JSON columns are
serialized by psycopg's ``json`` dumper (``json.dumps``, SQLAlchemy's default
serializer too). A unique violation (a concurrent request with the same idempotency
key) is raised as SQLAlchemy's :class:`~sqlalchemy.exc.IntegrityError`, as an
INSERT's is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, Table, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from carepost.core.bulk import write_rows
from carepost.crypto.fields import EncryptedJSON, EncryptedType
from carepost.crypto.keyring import TenantKeys

Processor = Callable[[Any], Any]
# json.dumps(value, separators=(",", ":"), default=str), as EncryptedJSON stores it,
# without building an encoder for each value.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


class Sealer:
    """Seals the PHI values of outbox rows ahead of the write, exactly as the columns'
    types would at the write, under the tenant's active data key."""

    def __init__(self, keys: TenantKeys, table: Table) -> None:
        self._encrypt = keys.encrypt
        self._labels: dict[str, str] = {}
        self._json: set[str] = set()
        for column in table.columns:
            if isinstance(column.type, EncryptedType):
                self._labels[column.key] = column.type.label
                if isinstance(column.type, EncryptedJSON):
                    self._json.add(column.key)

    def text(self, column: str, value: str | None) -> bytes | None:
        """An :class:`~carepost.crypto.fields.EncryptedString` column's ciphertext."""
        if value is None:
            return None
        assert column not in self._json
        return self._encrypt(self._labels[column], value.encode("utf-8"))

    def json(self, column: str, value: Any) -> bytes | None:
        """An :class:`~carepost.crypto.fields.EncryptedJSON` column's ciphertext."""
        if value is None:
            return None
        assert column in self._json
        return self._encrypt(self._labels[column], _COMPACT_JSON.encode(value).encode("utf-8"))


def column_defaults(table: Table) -> dict[str, Any]:
    """Each column's constant Python-side default, as an INSERT would apply it; ``None``
    for the others (no default, or one computed per row: ids, times, empty lists, which
    the writer sets). The base of a row whose writer names only what it sets."""
    return {
        column.key: (
            column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None
        )
        for column in table.columns
    }


_COLUMN_TYPES = text(
    "SELECT attname, atttypid FROM pg_attribute"
    " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"
)


def _processors(
    table: Table, columns: Sequence[str], dialect: Dialect
) -> list[tuple[int, Processor]]:
    found: list[tuple[int, Processor]] = []
    for position, name in enumerate(columns):
        column_type = table.c[name].type
        if isinstance(column_type, (JSON, EncryptedType)):
            continue  # sealed ahead; psycopg's json dumper serializes the object itself
        processor = column_type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            found.append((position, processor))
    return found


_PROCESSORS: dict[tuple[str, str, tuple[str, ...]], list[tuple[int, Processor]]] = {}
RowWriter = Callable[[Sequence[Any]], None]


class _Abandoned(Exception):
    """The COPY was given up because the caller failed: what the server is told (and
    may log), in place of the caller's exception, whose message may quote a value."""

    def __str__(self) -> str:
        return "the batch was abandoned"


@contextmanager
def outbox_writer(session: Session, table: Table, columns: Sequence[str]) -> Iterator[RowWriter]:
    """A function that writes one row (a tuple in the order of ``columns``, PHI sealed
    by a :class:`Sealer`) into ``table``; the rows are written when the block ends.

    PostgreSQL: the rows stream into one binary COPY as they are given, so the server
    stores them while the caller prepares the next ones (a batch's rendering and
    sealing run beside the server's inserts, on another core). The session's
    connection is busy with the COPY inside the block: no other statement may run
    there. SQLite: the rows are collected and written with one ``executemany`` when
    the block ends.

    When the block raises, nothing is written (the COPY is abandoned) and the
    exception propagates; the server is told only that the batch was abandoned.
    """
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        rows: list[Sequence[Any]] = []
        yield rows.append
        write_rows(session, table, columns, rows, presealed=True)
        return
    names = tuple(columns)
    preparer = dialect.identifier_preparer
    qualified = preparer.format_table(table)
    type_of = {
        str(name): int(oid) for name, oid in connection.execute(_COLUMN_TYPES, {"table": qualified})
    }
    key = (dialect.name, table.name, names)
    processors = _PROCESSORS.get(key)
    if processors is None:
        processors = _PROCESSORS[key] = _processors(table, names, dialect)
    statement = (
        f"COPY {qualified} ({', '.join(map(preparer.quote, names))}) FROM STDIN (FORMAT BINARY)"
    )
    driver = connection.connection.driver_connection
    failure: BaseException | None = None
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            copy.set_types([type_of[name] for name in names])
            write_row = copy.write_row

            def write(row: Sequence[Any]) -> None:
                values = list(row)
                for position, processor in processors:
                    value = values[position]
                    if value is not None:
                        values[position] = processor(value)
                write_row(values)

            try:
                yield write
            except BaseException as error:  # noqa: BLE001 — re-raised below, as it is
                failure = error
                raise _Abandoned from None
    except _Abandoned:
        assert failure is not None
        raise failure from None
    except dialect.loaded_dbapi.IntegrityError as error:
        raise IntegrityError(statement, None, error) from error
