"""Rules for free text arriving from outside: what a text field may contain.

Text is stored verbatim (markup and SQL are just characters: queries are
parameterized and output is JSON or autoescaped HTML), but some characters are
never legitimate in a name or an identifier and break storage downstream:
NUL cannot be stored in a PostgreSQL text column, a lone UTF-16 surrogate
cannot be encoded as UTF-8 (for the database or for encryption), and other
control characters corrupt CSV exports and log lines. They are rejected with a
clear validation error instead of failing deep inside as a 500.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# C0 controls (tab, newline and carriage return are judged separately), DEL, C1
# controls, and UTF-16 surrogates.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\n\r]")


def check_single_line(value: str) -> str:
    """Reject control characters, including tabs and line breaks."""
    if _FORBIDDEN.search(value) or _LINE_BREAKS.search(value):
        raise PydanticCustomError(
            "text_control_characters", "must be one line without control characters"
        )
    return value


def check_multi_line(value: str) -> str:
    """Reject control characters other than tabs and line breaks."""
    if _FORBIDDEN.search(value):
        raise PydanticCustomError("text_control_characters", "must not contain control characters")
    return value


def has_forbidden_characters(value: str, *, multi_line: bool = False) -> bool:
    """For services that validate text outside Pydantic (imports, CLI)."""
    return bool(_FORBIDDEN.search(value) or (not multi_line and _LINE_BREAKS.search(value)))


SingleLineText = Annotated[str, AfterValidator(check_single_line)]
MultiLineText = Annotated[str, AfterValidator(check_multi_line)]
