"""Helpers for tests that drive carepost the way an operator does: through the
environment (``CAREPOST_*``) and the ``carepost`` command, in-process or as a
real child process."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def own_database(run_dir: Path, log_file: Path, prefix: str) -> Iterator[Settings]:
    """Settings for a database of its own (a SQLite file in ``run_dir``, or a fresh
    PostgreSQL schema when ``CAREPOST_TEST_DATABASE_URL`` is set, dropped after):
    for tests that kill processes, which must not share the suite's SQLite file."""
    from sqlalchemy import create_engine, text

    from carepost.core.config import load_settings
    from carepost.crypto.keyprovider import init_key_file

    key_file = run_dir / "master.key"
    init_key_file(key_file)
    overrides: dict[str, object] = {"database_url": f"sqlite:///{run_dir / 'carepost.db'}"}
    admin = None
    url = os.environ.get("CAREPOST_TEST_DATABASE_URL")
    if url:
        schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        overrides = {"database_url": url, "database_schema": schema}
    try:
        yield load_settings(
            environment="test",
            master_key_file=key_file,
            data_dir=run_dir,
            log_file=log_file,
            cookie_secure=True,
            base_url="https://testserver",
            **overrides,
        )
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{overrides["database_schema"]}" CASCADE'))
            admin.dispose()
