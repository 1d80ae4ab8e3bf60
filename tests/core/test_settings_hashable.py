"""Settings are frozen and hashable: per-settings caches (the feedback secret) rely on it."""

from __future__ import annotations

from carepost.core.config import Settings


def test_settings_stay_hashable_with_every_collection_setting() -> None:
    settings = Settings(
        environment="test",
        domains_dns_nameservers=["127.0.0.1:5353"],
        domains_spf_addresses=["192.0.2.0/24"],
    )
    assert hash(settings) == hash(settings)
    assert settings.domains_dns_nameservers == ("127.0.0.1:5353",)
