"""Fixtures of the protection tests: an empty shared queue, runtimes with changed
settings, and the e2ee tests' PKI and gpg homes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from carepost.core.runtime import Runtime
from carepost.messages.models import Message
from tests.e2ee.conftest import make_gpg, test_ca  # noqa: F401 - fixtures used here too


@pytest.fixture
def empty_queue(runtime: Runtime) -> None:
    """Nothing due in the shared database (a worker run claims every tenant's rows)."""
    with runtime.database.session() as session:
        session.execute(
            update(Message)
            .where(Message.state.in_(("queued", "deferred", "sending")))
            .values(state="cancelled")
        )


@pytest.fixture
def with_settings(runtime: Runtime) -> Callable[..., Runtime]:
    """The suite's runtime with some settings changed."""

    def make(**changes: Any) -> Runtime:
        return Runtime(
            runtime.settings.model_copy(update=changes), runtime.database, runtime.keyring
        )

    return make
