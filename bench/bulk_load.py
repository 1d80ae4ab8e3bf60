"""Bulk loading for the benchmark data set: COPY/executemany and the load-time shortcuts.

Only the generator uses this: it writes rows exactly as the services would, but
through the driver (psycopg 3 ``COPY``, sqlite3 ``executemany``) and with the
database relaxed while it loads (:func:`bulk_mode`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, Table, event, text
from sqlalchemy.orm import Session

from carepost.contacts.activity_models import ContactEvent
from carepost.contacts.models import ContactStageHistory, ContactToken
from carepost.core.runtime import Runtime


def table_of(model: Any) -> Table:
    table: Table = model.__table__
    return table


class RowWriter:
    """Bulk insert of plain tuples into one table: COPY on PostgreSQL, executemany on SQLite.

    Values arrive as Python objects (UUIDs, aware datetimes, bytes); SQLite gets
    them in the storage format SQLAlchemy uses there (32 hex digits, naive UTC text).
    """

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"

    def write(self, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        raw = self.connection.connection.driver_connection
        names = ", ".join(columns)
        if self.postgres:
            statement = f"COPY {table.name} ({names}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in columns)
        cursor = raw.cursor()  # type: ignore[union-attr]
        cursor.executemany(
            f"INSERT INTO {table.name} ({names}) VALUES ({marks})",
            (tuple(_sqlite_value(value) for value in row) for row in rows),
        )
        cursor.close()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


# Secondary indexes rebuilt once after a PostgreSQL load instead of row by row
# (primary keys and unique indexes stay: they guard the data).
DEFERRED_INDEX_TABLES = (ContactEvent, ContactStageHistory, ContactToken)


def deferred_indexes() -> list[Index]:
    return [
        index
        for model in DEFERRED_INDEX_TABLES
        for index in table_of(model).indexes
        if not index.unique
    ]


@contextmanager
def bulk_mode(runtime: Runtime) -> Iterator[None]:
    """Loading fast; the data set can be rebuilt, so durability while loading does not matter.

    SQLite: no fsync, no per-row foreign key checks, a big page cache (pragmas are
    per connection and cannot change inside a transaction, so they are set when a
    connection opens; the pool is emptied before and after). PostgreSQL: secondary
    indexes of the big tables are dropped and built again at the end (a sort beats
    millions of random index inserts), and a superuser skips the per-row foreign
    key triggers (``session_replication_role``, see :func:`write_chunk`). Every id
    the generator writes comes from the same chunk or from the tenant's own lists
    and kinds, so the keys hold by construction; the read-back test checks them.
    """
    engine = runtime.database.engine
    if engine.dialect.name == "postgresql":
        indexes = deferred_indexes()
        with engine.begin() as connection:
            for index in indexes:
                connection.execute(text(f'DROP INDEX IF EXISTS "{index.name}"'))
        try:
            yield
        finally:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
                for index in indexes:
                    index.create(connection, checkfirst=True)
        return

    def relax(dbapi_connection: Any, _record: Any) -> None:
        pragmas = ("synchronous=OFF", "cache_size=-262144", "temp_store=MEMORY", "foreign_keys=OFF")
        for pragma in pragmas:
            dbapi_connection.execute(f"PRAGMA {pragma}")

    event.listen(engine, "connect", relax)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", relax)
        engine.dispose()


def is_postgres_superuser(runtime: Runtime) -> bool:
    engine = runtime.database.engine
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        query = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        return bool(connection.execute(query).scalar())


def analyze(runtime: Runtime) -> None:
    """Fresh planner statistics: bulk loads leave them stale (and autovacuum may be off).

    PostgreSQL: ``VACUUM (ANALYZE)``, not only ANALYZE: the vacuum sets the pages'
    all-visible bits, without which every index-only scan (the segment queries' token,
    event and list lookups) still visits the heap for each row, several times slower;
    autovacuum would set them on a live system, but only some time after a bulk load."""
    engine = runtime.database.engine
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("VACUUM (ANALYZE)"))
        else:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
