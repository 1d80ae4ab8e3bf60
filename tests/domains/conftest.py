"""The domains tests add the sending domains themselves: their tenants start with none
(the suite's tenants come with verified test domains, see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_tenant(make_tenant):
    def make(name: str = "Test Clinic", *, verified_senders: tuple[str, ...] = ()):
        return make_tenant(name, verified_senders=verified_senders)

    return make
