"""Configuration: environment variables (``CAREPOST_*``) over an optional TOML file.

The TOML file is ``$CAREPOST_CONFIG`` or ``./carepost.toml`` when it exists; keys
are the setting names without the prefix (``database_url = "..."``). Settings are
validated at start; an invalid one raises :class:`ConfigError` naming the setting
and never echoing a secret's value.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carepost.core.errors import ConfigError

SECRET_SETTINGS = frozenset({"master_key", "smarthost_password", "feedback_secret"})


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

    # delivery: the SMTP transport (carepost/delivery/, docs/email-delivery-smtp.md)
    smtp_mode: Literal["smarthost", "mx"] = "mx"
    smarthost_host: str | None = None
    smarthost_port: int = Field(default=587, ge=1, le=65535)
    smarthost_tls: Literal["starttls", "implicit", "none"] = "starttls"
    smarthost_username: str | None = None
    smarthost_password: SecretStr | None = None
    smarthost_ca_file: Path | None = Field(
        default=None, description="Extra CA bundle to verify the smarthost's certificate."
    )
    smtp_helo_name: str | None = Field(
        default=None, description="Name sent in EHLO; the machine's FQDN when unset."
    )
    smtp_connect_timeout: float = Field(default=30.0, gt=0)
    smtp_command_timeout: float = Field(default=300.0, gt=0)
    smtp_data_timeout: float = Field(default=600.0, gt=0)
    smtp_domain_concurrency: int = Field(default=10, ge=1)
    smtp_domain_rate: float = Field(default=0.0, ge=0)
    smtp_connection_idle_seconds: float = Field(default=30.0, gt=0)
    smtp_connection_max_messages: int = Field(default=1000, ge=1)
    delivery_lifetime: timedelta = timedelta(days=5)
    tls_policy: Literal["opportunistic", "encrypt", "verify", "none"] = "opportunistic"
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle for tls_policy=verify (system CAs when unset)."
    )
    mx_port: int = Field(default=25, ge=1, le=65535)
    dns_nameserver: str | None = Field(
        default=None, description="Resolver address for MX lookups; /etc/resolv.conf when unset."
    )
    dns_port: int = Field(default=53, ge=1, le=65535)
    # Recipient domains' TLS (carepost/protection, docs/email-delivery.md): MTA-STS
    # policies (RFC 8461) and DANE TLSA (RFC 7672), asked through dns_nameserver.
    mta_sts_enabled: bool = Field(
        default=True,
        description="Look up recipient domains' MTA-STS policies and DANE TLSA records "
        "when a message's protection depends on them.",
    )
    mta_sts_timeout: float = Field(default=10.0, gt=0, le=60)
    mta_sts_address: str | None = Field(
        default=None,
        description="Fetch MTA-STS policies from this address instead of resolving "
        "mta-sts.<domain> (tests, split-horizon DNS); the certificate is still "
        "verified against mta-sts.<domain>.",
    )
    mta_sts_port: int = Field(default=443, ge=1, le=65535)
    mta_sts_ca_file: Path | None = Field(
        default=None,
        description="CA bundle for MTA-STS policy hosts (system CAs when unset).",
    )
    web_copy_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days a message's 'view in browser' link works after it is sent "
        "(never longer than the message is kept).",
    )
    public_rate_per_minute: int = Field(
        default=120,
        ge=0,
        description="Requests per minute per client address on the public tracking and "
        "view-in-browser routes (/t/...); 0 turns the limit off.",
    )
    sender_unverified_tenants: tuple[str, ...] = Field(
        default=(),
        description="Slugs of tenants that may send from unverified domains (a "
        "development machine's own organizations; none by default: the `carepost demo` "
        "organization sends as its own demo.example); see docs/sending-domains.md.",
    )
    mx_allow_non_global: bool = Field(
        default=False,
        description="Deliver to MX hosts at loopback/private/link-local addresses "
        "(tests and labs only: otherwise refused, see carepost/delivery/mx.py).",
    )
    # --- feedback (bounces, complaints, webhooks, tracking): docs/bounces-and-complaints.md
    feedback_secret: SecretStr | None = Field(
        default=None,
        description="Base64 secret (32+ bytes) sealing VERP and tracking tokens; "
        "default: <data_dir>/feedback.key, created on first use.",
    )
    bounce_domain: str = Field(
        default="bounces.localhost", description="Domain of the VERP return paths."
    )
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(default=2525, ge=1, le=65535)
    inbound_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    # Sending domains and DKIM (carepost/domains): the name servers the DNS check asks
    # ("host" or "host:port"; empty: the system's), what the SPF record must authorize
    # (carepost's sending servers), the DMARC report address recommended, and how long a
    # rotated DKIM key waits as "next" (published) before it signs.
    domains_dns_nameservers: tuple[str, ...] = ()
    domains_dns_timeout: float = Field(default=5.0, gt=0, le=60)
    domains_spf_include: str | None = None
    domains_spf_addresses: tuple[str, ...] = ()
    domains_dmarc_report_address: str | None = None
    domains_key_promotion_hours: float = Field(default=72.0, gt=0)

    # --- messages: the email outbox and its delivery loop (docs/email-delivery.md); it
    # sends through the delivery transport above (smtp_mode, smarthost_*, delivery_lifetime)
    outbox_claim_batch: int = Field(default=200, ge=1, le=5000)
    outbox_lease_seconds: float = Field(default=300.0, gt=0)
    outbox_concurrency: int = Field(default=10, ge=1, le=500)
    # How long a group commit of outcomes waits for the reports of lanes still in an
    # SMTP transaction (0: it writes what is waiting at once).
    outbox_commit_linger_seconds: float = Field(default=0.01, ge=0, le=1)
    outbox_deliver_budget_seconds: float = Field(default=30.0, gt=0)
    outbox_max_attachment_bytes: int = Field(default=7 * 1024 * 1024, ge=1024)
    outbox_max_batch_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # Contact imports (carepost.imports.runner): processes that check and normalize
    # the next batch while the current one is written; 0 checks it in the importing
    # process itself.
    import_prepare_processes: int = Field(default=1, ge=0, le=16)

    # SMTP gateway (carepost/gateway, docs/gateway.md): customers' mail servers relay
    # through it; STARTTLS with this certificate is required before anything else.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=2587, ge=1, le=65535)
    gateway_tls_cert_file: Path | None = None
    gateway_tls_key_file: Path | None = None
    gateway_client_ca_file: Path | None = Field(
        default=None,
        description="CA bundle client certificates are checked against (identification "
        "by certificate fingerprint); default: the system's CAs.",
    )
    gateway_max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    gateway_max_recipients: int = Field(default=100, ge=1, le=1000)

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

    @model_validator(mode="after")
    def _smarthost_named(self) -> Settings:
        if self.smtp_mode == "smarthost" and not self.smarthost_host:
            raise ValueError("smtp_mode = smarthost needs smarthost_host")
        return self

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
