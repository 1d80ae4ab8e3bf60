"""Structured JSON logs (structlog) that never carry PHI, passwords, tokens or keys.

Three defences: code logs identifiers and counts, never values of PHI fields; a
processor drops any event key whose name marks a secret or PHI field, so a slip
(``log.info("x", password=...)``) writes ``"[redacted]"`` instead of the value;
and exceptions are logged as their type and frames only, never their message,
because messages quote data (a database error repeats the row it refused). This
holds for structlog events and for libraries logging through the standard
library (the server's "Exception in ASGI application" traceback included).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

SENSITIVE_KEY = re.compile(
    r"passw(or)?d|passphrase|secret|token|api_?key|authorization|cookie|totp|otp|code|"
    r"master_key|private|first_name|last_name|birth|dob|ssn|phone|email|address|phi|body|"
    r"subject|content|name$",
    re.IGNORECASE,
)
# Keys that look sensitive by name but are identifiers or counts we do want.
ALLOWED_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "tenant_id",
        "user_id",
        "request_id",
        "path",
        "method",
        "status_code",
        "duration_ms",
        "action",
        "object_id",
        "object_type",
        "count",
        "code_version",
        "exc_info",
        "api_key_id",
        "client_address",
        "route",
    }
)


def redact_sensitive(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    for key in list(event):
        if key not in ALLOWED_KEYS and SENSITIVE_KEY.search(key):
            event[key] = "[redacted]"
    return event


MAX_FRAMES = 12


def describe_exception(error: BaseException) -> dict[str, Any]:
    """An exception without its message: its type, where it was raised, and the types
    of the exceptions it was raised from."""
    frames = [
        f"{frame.filename}:{frame.lineno}:{frame.name}"
        for frame in traceback.extract_tb(error.__traceback__)
    ]
    causes: list[str] = []
    cause = error.__cause__ or error.__context__
    while cause is not None and len(causes) < 5:
        causes.append(_type_name(cause))
        cause = cause.__cause__ or cause.__context__
    description: dict[str, Any] = {"type": _type_name(error), "frames": frames[-MAX_FRAMES:]}
    if causes:
        description["caused_by"] = causes
    return description


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    if exc_info:
        return sys.exc_info()[1]
    return None


def describe_exc_info(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replace ``exc_info`` by :func:`describe_exception` (structlog's
    ``format_exc_info`` would print the message, and the message may hold PHI)."""
    error = _exception_of(event.pop("exc_info", None))
    if error is not None:
        event["exception"] = describe_exception(error)
    return event


class SafeFormatter(logging.Formatter):
    """Standard-library log records with exceptions shown as type and frames only."""

    def formatException(self, ei: Any) -> str:
        error = _exception_of(ei)
        if error is None:
            return ""
        described = describe_exception(error)
        return f"{described['type']} at " + " < ".join(reversed(described["frames"]))

    def formatStack(self, stack_info: str) -> str:
        return "[stack omitted]"


_configured_stream: TextIO | None = None


def configure_logging(level: str = "info", fmt: str = "json", file: Path | None = None) -> None:
    global _configured_stream
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        stream: TextIO = file.open("a", encoding="utf-8", buffering=1)
    else:
        stream = sys.stderr
    _configured_stream = stream
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            describe_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: send it to the same place, as text.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
