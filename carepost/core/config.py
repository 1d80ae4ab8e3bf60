"""Configuration: environment variables (``CAREPOST_*``) over an optional TOML file.

The TOML file is ``$CAREPOST_CONFIG`` or ``./carepost.toml`` when it exists; keys
are the setting names without the prefix (``database_url = "..."``). Settings are
validated at start; an invalid one raises :class:`ConfigError` naming the setting
and never echoing a secret's value.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carepost.core.errors import ConfigError

SECRET_SETTINGS = frozenset({"master_key"})


class Settings(BaseSettings):
    """Every knob of a carepost process. See docs/operations.md for each one."""

    model_config = SettingsConfigDict(env_prefix="CAREPOST_", extra="forbid", frozen=True)

    environment: Literal["production", "development", "test"] = "production"
    database_url: str = "sqlite:///./var/carepost.db"
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema to use (search_path); tests use one per run."
    )
    data_dir: Path = Path("./var")

    master_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte master key; overrides master_key_file."
    )
    master_key_file: Path = Path("./var/master.key")
    key_provider: Literal["local"] = "local"

    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cookie_secure: bool = True

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    log_file: Path | None = None

    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Import uploads (POST /api/v1/imports) stream into the database, so they may be big.
    max_import_bytes: int = Field(default=4 * 1024 * 1024 * 1024, ge=1024)

    worker_poll_seconds: float = Field(default=1.0, gt=0)

    # Contact imports (carepost.imports.runner): processes that check and normalize
    # the next batch while the current one is written; 0 checks it in the importing
    # process itself.
    import_prepare_processes: int = Field(default=1, ge=0, le=16)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _toml_values() -> dict[str, Any]:
    path = Path(os.environ.get("CAREPOST_CONFIG", "carepost.toml"))
    if not path.is_file():
        if "CAREPOST_CONFIG" in os.environ:
            raise ConfigError(f"CAREPOST_CONFIG points to {path}, which does not exist")
        return {}
    try:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    # Environment variables win over the file.
    return {k: v for k, v in values.items() if f"CAREPOST_{k.upper()}" not in os.environ}


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError naming every bad setting."""
    values = {**_toml_values(), **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            message = error["msg"]
            if name in SECRET_SETTINGS:
                message = "invalid value (not shown: it is a secret)"
            elif error["type"] == "extra_forbidden":
                message = "unknown setting"
            problems.append(f"CAREPOST_{name.upper()}: {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
