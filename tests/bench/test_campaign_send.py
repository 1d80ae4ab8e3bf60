"""The campaign benchmark runs end to end at a tiny scale: every contact of the data
set with an email becomes one message of the campaign (queued with marketing
consent, suppressed without), the figures come out, and the run leaves nothing
behind."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from bench import campaign_send
from carepost.messages.models import Campaign, Message

SCALE = 120


def test_a_campaign_to_the_data_set_queues_everyone_reachable(runtime):
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    tenant_id = campaign_send.dataset(runtime, SCALE, 0, slug=slug)
    # A second call reuses the data set (whatever events it was built with).
    assert campaign_send.dataset(runtime, SCALE, 99, slug=slug) == tenant_id
    result = campaign_send.send_campaign(runtime, tenant_id, progress=lambda _line: None)
    assert result.audience > SCALE * 0.9
    assert set(result.counts) <= {"queued", "suppressed"}
    assert result.counts["queued"] > 0 and result.counts["suppressed"] > 0
    assert 0 < result.messages <= result.audience and result.rate > 0
    assert result.peak_rss_mb >= result.rss_at_end_mb > 0
    with runtime.database.session() as session:
        left = session.scalar(
            select(func.count()).select_from(Message).where(Message.tenant_id == tenant_id)
        )
        campaigns = session.scalar(
            select(func.count()).select_from(Campaign).where(Campaign.tenant_id == tenant_id)
        )
    assert (left, campaigns) == (0, 0)


def test_the_command_prints_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAREPOST_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    campaign_send.run(["--scale", "40", "--database", f"sqlite:///{tmp_path / 'c.db'}"])
    first = capsys.readouterr().out.splitlines()[-2]
    assert first.startswith("campaign_send seconds_to_last_queued=")
    for figure in ("messages/s=", "peak_rss_mb=", "rss_growth_mb="):
        assert figure in first
