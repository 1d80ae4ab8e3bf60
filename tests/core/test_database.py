"""The engine's connection settings on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from carepost.core.runtime import Runtime


def test_postgresql_plans_each_statement_for_its_parameters(runtime: Runtime) -> None:
    """psycopg would prepare a statement run five times, and a generic plan made while
    a table was small kept a sequential scan as the table grew (the outbox's
    idempotency look-up took seconds at 200k messages): nothing is prepared, so each
    execution is planned for its parameters. The server's own cached plans (the
    foreign-key checks of every written row) keep PostgreSQL's default: forcing
    custom plans for the whole session planned each row's key check again."""
    if runtime.database.is_sqlite:
        pytest.skip("PostgreSQL's plan cache")
    with runtime.database.engine.connect() as connection:
        for n in range(10):
            assert connection.scalar(text("SELECT CAST(:n AS integer) + 1"), {"n": n}) == n + 1
        assert connection.scalar(text("SELECT count(*) FROM pg_prepared_statements")) == 0
        assert connection.scalar(text("SHOW plan_cache_mode")) == "auto"
        if runtime.settings.database_schema:
            assert runtime.settings.database_schema in connection.scalar(text("SHOW search_path"))
