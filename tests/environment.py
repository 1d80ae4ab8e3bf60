"""Helpers for tests that drive carepost the way an operator does: through the
environment (``CAREPOST_*``) and the ``carepost`` command, in-process or as a
real child process."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from carepost.core.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def carepost_environment(settings: Settings) -> dict[str, str]:
    """The ``CAREPOST_*`` variables that make a process use ``settings``."""
    env = {
        "CAREPOST_ENVIRONMENT": settings.environment,
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_MASTER_KEY_FILE": str(settings.master_key_file),
        "CAREPOST_BASE_URL": settings.base_url,
        "CAREPOST_LOG_LEVEL": "debug",
        "CAREPOST_LOG_FORMAT": "json",
    }
    if settings.database_schema:
        env["CAREPOST_DATABASE_SCHEMA"] = settings.database_schema
    if settings.log_file is not None:
        env["CAREPOST_LOG_FILE"] = str(settings.log_file)
    return env


def child_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """A clean environment for a ``python -m carepost ...`` child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    env.update(carepost_environment(settings))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def carepost_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "carepost", *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
