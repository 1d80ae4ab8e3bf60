"""The end-to-end email benchmark runs at a tiny scale: the batch API queues the
messages, real ``carepost worker`` processes deliver them to the sink in another
process, which must count exactly as many (the benchmark fails loudly otherwise),
and the bare loop sends as many to a sink of its own."""

from __future__ import annotations

import os

from bench.email_e2e import measure


def test_every_message_reaches_the_sink_through_the_real_workers(tmp_path):
    url = os.environ.get("CAREPOST_TEST_DATABASE_URL")
    figures = measure(
        200,
        # SQLite has a single claimer: one worker; PostgreSQL takes two.
        workers=2 if url else 1,
        dkim=True,
        connections=2,
        url=url or f"sqlite:///{tmp_path / 'e2e.db'}",
        workdir=tmp_path,
    )
    assert figures.submit_seconds > 0
    assert figures.deliver_seconds > 0 and figures.bare_seconds > 0
    assert figures.worker_cpu_seconds > 0
    assert figures.sink_cpu_seconds > 0 and figures.bare_cpu_seconds > 0
    # The workers' PostgreSQL backends are found by their application name.
    assert (figures.database_cpu_seconds is not None) == bool(url)
    assert figures.database_cpu_seconds is None or figures.database_cpu_seconds > 0
    assert figures.load_deliver.startswith("load=")
