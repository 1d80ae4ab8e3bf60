"""Structured JSON logs (structlog) that never carry PHI, passwords, tokens or keys.

Two defences: code logs identifiers and counts, never values of PHI fields; and a
processor drops any event key whose name marks a secret or PHI field, so a slip
(``log.info("x", password=...)``) writes ``"[redacted]"`` instead of the value.
"""

from __future__ import annotations

import logging
import re
import sys
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
            structlog.processors.format_exc_info,
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
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
