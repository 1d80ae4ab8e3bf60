"""The batch API benchmark runs end to end at a tiny scale and prints its figures,
the CPU time per message and the load beside the wall-clock rate; on PostgreSQL
also those of the API served by two processes."""

from __future__ import annotations

import os

from bench import email_batch


def test_the_batch_benchmark_prints_rate_cpu_and_load(monkeypatch, capsys):
    monkeypatch.setattr(email_batch, "TOTAL", 60)
    monkeypatch.setattr(email_batch, "BATCH", 25)
    url = os.environ.get("CAREPOST_TEST_DATABASE_URL")
    if url:
        monkeypatch.setenv("CAREPOST_DATABASE_URL", url)
    else:
        monkeypatch.delenv("CAREPOST_DATABASE_URL", raising=False)
    assert email_batch.run() > 0
    out = capsys.readouterr().out
    assert "email_batch messages/s=" in out and "messages=60 batch=25" in out
    assert "cpu_us_per_message=" in out and "load=" in out
    if url:  # PostgreSQL: also as `carepost serve --workers 2`, four clients at once
        assert "email_batch served processes=2 clients=4 messages/s=" in out
        assert "server_cpu_us_per_message=" in out and "postgres_cpu_us_per_message=" in out
