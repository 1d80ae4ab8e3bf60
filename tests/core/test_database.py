"""The engine's connection settings on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from carepost.core.runtime import Runtime


def test_postgresql_plans_each_execution_of_a_prepared_statement(runtime: Runtime) -> None:
    """psycopg prepares a statement run five times; a generic plan made while a table
    was small would keep a sequential scan as the table grows (the outbox's
    idempotency lookup took seconds at 200k messages). Each execution is planned."""
    if runtime.database.is_sqlite:
        pytest.skip("PostgreSQL's plan cache")
    with runtime.database.engine.connect() as connection:
        assert connection.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
        if runtime.settings.database_schema:
            assert runtime.settings.database_schema in connection.scalar(text("SHOW search_path"))
