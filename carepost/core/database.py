"""Database engine, sessions and the declarative base, the same code on SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on; every transaction starts with
``BEGIN IMMEDIATE`` so that concurrent writers queue on SQLite's single write
lock instead of failing half-way with ``SQLITE_BUSY``. PostgreSQL may be pinned to
one schema (``database_schema``) so that test runs never collide. Statement
parameters are kept out of error messages (``hide_parameters``): they hold PHI.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator, Uuid, create_engine, event, text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from carepost.core.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Execution option for read-only connections on SQLite: begin without the write lock.
READ_SNAPSHOT = "carepost_read_snapshot"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): time-ordered, so primary-key indexes stay compact and cursors sort."""
    return new_ids(1)[0]


_RAND_A = 0xFFF << 64  # 12 random bits after the version
_RAND_B = (1 << 62) - 1  # 62 random bits after the variant


def new_ids(count: int) -> list[uuid.UUID]:
    """``count`` UUIDv7s as :func:`new_id` makes them, with one read of the system's
    random source for all (a bulk write makes three ids per imported contact)."""
    unix_ms = time.time_ns() // 1_000_000
    fixed = ((unix_ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62)
    pool = secrets.token_bytes(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        rand = int.from_bytes(pool[start : start + 10], "big")
        ids.append(uuid.UUID(int=fixed | ((rand << 2) & _RAND_A) | (rand & _RAND_B)))
    return ids


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both engines (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid()}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver (see the SQLAlchemy pysqlite notes).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A long read (audit verification, export) asks for a deferred BEGIN instead:
        # a WAL snapshot that never holds up writers.
        if connection.get_execution_options().get(READ_SNAPSHOT):
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_postgres(engine: Engine, schema: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET search_path TO "{schema}"')
        cursor.close()
        dbapi_connection.commit()


# What the planner may not do while it plans the outbox's claim (see in_index_order).
_INDEX_ORDER_SETTINGS = ("enable_bitmapscan", "enable_sort")


@contextmanager
def in_index_order(session: Session) -> Iterator[None]:
    """PostgreSQL plans the statements inside without bitmap scans and without sorts
    (SQLite: no effect), so a read that has an index in its ``ORDER BY`` and a
    ``LIMIT`` walks that index in its order and stops at the limit.

    For the claim of the outbox, whose plan must not depend on statistics. Until
    ANALYZE has seen a burst of new rows (later with autovacuum, never without), the
    default selectivities make ``state IN (...)`` look like a few hundred rows; from
    statistics gathered when the queue was short, so does a queue of 100,000. Either
    way, reading every due row (a bitmap scan, or another index such as
    ``(campaign_id, state)`` scanned whole) and sorting them looks as cheap as
    walking ``ix_messages_due``, and costs 50-70 ms a claim at 100,000 rows instead
    of about one. A disabled plan type only costs more to the planner, so a query no
    index can order still runs (sorted). The settings are the transaction's
    (``set_config(..., true)``, like ``SET LOCAL``) and are put back when the block
    ends, in one round trip each way; a block that raises leaves them to the
    rollback."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    names = _INDEX_ORDER_SETTINGS
    before = session.execute(
        text(
            "SELECT "
            + ", ".join(
                f"current_setting('{name}'), set_config('{name}', 'off', true)" for name in names
            )
        )
    ).one()[0::2]
    yield
    session.execute(
        text(
            "SELECT "
            + ", ".join(f"set_config('{name}', :v{n}, true)" for n, name in enumerate(names))
        ),
        {f"v{n}": value for n, value in enumerate(before)},
    )


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if settings.is_sqlite:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        _configure_sqlite(engine)
    else:
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            hide_parameters=True,
            # psycopg prepares a statement run five times, and PostgreSQL may then keep
            # one generic plan for it, made on the statistics of that moment: a table
            # that was small then (the outbox at a worker's start, before (auto)analyze
            # saw it grow) kept its sequential scan, and an idempotency look-up took
            # seconds at 200k messages. Unprepared, each statement is planned for its
            # own parameters. The server's own prepared plans (the foreign-key checks
            # run per written row) keep PostgreSQL's default plan caching: forcing
            # custom plans server-wide (`plan_cache_mode`) planned every key check of
            # every row again, which doubled the server's CPU of a batch of messages.
            connect_args={"prepare_threshold": None},
        )
        if settings.database_schema:
            _configure_postgres(engine, settings.database_schema)
    return engine


class Database:
    """An engine with its session factory; one per process (or per test run)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block succeeds, rolled back when it raises."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def ensure_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
