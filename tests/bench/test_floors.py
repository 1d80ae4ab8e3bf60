"""The floors benchmark runs at a tiny scale: on PostgreSQL it imports a file, counts
what each contact is stored as and COPYs the stored rows back (it fails loudly when
the count comes back different); on either engine it times both SMTP loops against
the sink and the two DKIM signatures."""

from __future__ import annotations

import os

import pytest

from bench import floors


def test_the_delivery_floor_leaves_a_ceiling_above_what_signing_and_sending_cost(
    monkeypatch, capsys
):
    monkeypatch.delenv("CAREPOST_DATABASE_URL", raising=False)
    figures = floors.run(["--messages", "200"])
    out = capsys.readouterr().out
    assert "floors import skipped" in out
    line = next(line for line in out.splitlines() if line.startswith("floors delivery "))
    assert "ceiling_ratio_to_bare_loop=" in line and "(goal 0.5)" in line
    assert figures["sink_ms"] > 0 and figures["client_ms"] > 0
    assert figures["dkim_ms"] == pytest.approx(figures["rsa2048_ms"] + figures["ed25519_ms"])
    # Signing can only lower the ceiling.
    assert 0 < figures["delivery_ceiling_ratio"] < figures["unsigned_ceiling_ratio"]


@pytest.mark.skipif(
    not os.environ.get("CAREPOST_TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="the import's floors are measured on PostgreSQL",
)
def test_the_import_floor_counts_what_a_contact_is_stored_as(monkeypatch):
    monkeypatch.setenv("CAREPOST_DATABASE_URL", os.environ["CAREPOST_TEST_DATABASE_URL"])
    found = floors.import_floor(300)
    # Seven encrypted columns of the file's, and its MRN as an identifier.
    assert found["seals_per_row"] >= 7
    # Email, phone and MRN at least are each looked up by a token of their own.
    assert found["unique_tokens_per_row"] >= 3
    # A contact, its identifier, its stage history and its segmentation tokens.
    assert found["database_rows_per_contact"] > 4
    assert all(value > 0 for name, value in found.items() if name.endswith("_us"))
