"""Pydantic types shared by the API schemas of several domains."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _iso_text(value: Any) -> Any:
    """Refuse what pydantic would otherwise read as a Unix timestamp (a number, or a
    numeric string in a query): the documented format is ISO 8601 text, and a client
    sending ``1700000000`` has most likely mixed up its units."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("use an ISO 8601 date-time with a UTC offset, e.g. 2026-01-31T09:00:00Z")
    return value


# An ISO 8601 date-time with a UTC offset; never a Unix timestamp.
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
