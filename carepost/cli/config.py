"""``carepost config check``: validate and show the settings, secrets hidden."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import typer
from rich.text import Text
from sqlalchemy.engine import make_url

from carepost.cli.common import err, out
from carepost.core.config import SECRET_SETTINGS, Settings, get_settings
from carepost.crypto.keyprovider import load_key_provider

config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


def _shown(name: str, value: Any) -> str:
    if name in SECRET_SETTINGS:
        return "not set" if value is None else "set (hidden)"
    if name == "database_url":
        return make_url(str(value)).render_as_string(hide_password=True)
    return "" if value is None else str(value)


# Variables with the prefix that are not settings but are read elsewhere.
NON_SETTING_VARIABLES = frozenset(
    {"CAREPOST_CONFIG", "CAREPOST_TEST_DATABASE_URL", "CAREPOST_TEST_ARTIFACTS"}
)


def unknown_variables(settings: Settings) -> list[str]:
    """CAREPOST_* environment variables that match no setting (typos, usually)."""
    known = {f"CAREPOST_{name.upper()}" for name in type(settings).model_fields}
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith("CAREPOST_")
        and name.upper() not in known
        and name.upper() not in NON_SETTING_VARIABLES
    )


@config_app.command("check")
def config_check() -> None:
    """Validate the settings and print them, secrets hidden.

    Reads CAREPOST_* environment variables over ./carepost.toml (or the file
    named by CAREPOST_CONFIG), checks every value and the master key, and warns
    about CAREPOST_* variables that match no setting.

    Example: carepost config check
    """
    settings = get_settings()
    config_file = Path(os.environ.get("CAREPOST_CONFIG", "carepost.toml"))
    source = "read" if config_file.is_file() else "not present, defaults apply"
    out.print(f"Settings file: {config_file} ({source}); CAREPOST_* variables override it.")
    names = list(type(settings).model_fields)
    width = max(len(name) for name in names)
    for name in names:
        value = _shown(name, getattr(settings, name))
        out.print(f"{name:<{width}}  {value}")
    if settings.master_key is not None:
        load_key_provider(settings)  # raises ConfigError naming the problem
        out.print("Master key: from CAREPOST_MASTER_KEY.")
    elif settings.master_key_file.is_file():
        provider = load_key_provider(settings)
        mode = stat.S_IMODE(settings.master_key_file.stat().st_mode)
        note = "" if mode & 0o077 == 0 else f" WARNING: its mode is {mode:o}; chmod 600 it."
        out.print(
            f"Master key: key file {settings.master_key_file}, "
            f"{len(provider.key_ids)} key(s), active {provider.active_key_id}.{note}"
        )
    else:
        out.print(
            f"Master key: {settings.master_key_file} does not exist yet; "
            "`carepost migrate` creates it."
        )
    for name in unknown_variables(settings):
        err.print(Text(f"warning: {name} is not a carepost setting (a typo?)", style="yellow"))
    out.print(Text("Configuration is valid.", style="green"))
