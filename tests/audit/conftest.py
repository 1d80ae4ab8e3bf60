"""Fixtures for audit trail tests: rolled-back sessions, PostgreSQL-only tests.

Tampering happens in a transaction that is rolled back at the end of the test, so
the shared database keeps only intact chains and ``verify_chains`` over every chain
stays meaningful for the rest of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from carepost.core.config import Settings
from carepost.core.runtime import Runtime


@pytest.fixture(autouse=True)
def _postgres_only(request: pytest.FixtureRequest, settings: Settings) -> None:
    if request.node.get_closest_marker("postgres_only") and settings.is_sqlite:
        pytest.skip("needs PostgreSQL row locks and real concurrent writers")


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    """A unit of work that is always rolled back."""
    unit = runtime.database.sessionmaker()
    try:
        yield unit
    finally:
        unit.rollback()
        unit.close()
