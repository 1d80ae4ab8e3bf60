"""Benchmark: a campaign to a segment of the benchmark data set, from "send" to the
last message queued in the outbox, with the process's memory sampled throughout.

Uses the data set of :mod:`bench.datagen` at ``--scale`` contacts (default
1,000,000; seed 1): built unless the database holds it already. A data set of that
scale and seed is reused whatever its number of events (a campaign reads none), so
the 10M-event set of the other benchmarks is never replaced; without one, a set with
``--events`` events (default 0) is built. The engine is ``--database``, else
``CAREPOST_DATABASE_URL``, else SQLite in a temporary directory.

Each run creates, in the data set's tenant, a segment matching most contacts (every
contact whose email is not suppressed), a stored marketing template (CAN-SPAM footer:
the organization's address and the unsubscribe link; no PHI field), and a
marketing campaign to the segment; then presses *send*
(:func:`carepost.messages.campaigns.schedule_campaign` with no time) and drives the
``messages.campaigns`` job's step (:func:`~carepost.messages.campaigns.advance_campaign`)
until nothing is left to queue: the audience is frozen (a segment snapshot) and every
contact becomes a message row, ``queued`` with marketing consent and ``suppressed``
(``consent_missing:marketing``) without, through the same checks as the API. The
campaign and its messages are deleted afterwards, so runs do not pile up.

Prints::

    campaign_send seconds_to_last_queued=<s> messages/s=<n> peak_rss_mb=<m> rss_growth_mb=<g>

``rss_growth_mb`` is the resident size at the end of the run less the size when 10%
of the audience had been queued: flat memory is a growth near 0 whatever the scale.
The machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bench import datagen
from bench.dataset_rows import VERSION
from carepost.audit.service import SYSTEM
from carepost.contacts.activity_models import ContactEvent
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.domains.models import SendingDomain
from carepost.messages import campaigns
from carepost.messages.models import Campaign, CampaignState
from carepost.messages.schemas import CampaignIn
from carepost.segments import service as segments
from carepost.segments.models import SegmentSnapshot
from carepost.templates import service as templates
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant

DEFAULT_SCALE = 1_000_000
SEED = 1
DOMAIN = "riverside.example"
ADDRESS = "100 Main Street\nSpringfield, IL 62701"
SUBJECT = "Flu shots are here at Riverside Clinic"
HTML = (
    "<h1>Flu shots are here</h1><p>Walk in any weekday from 8 to 6, or book online.</p>"
    '<p><a href="{{ view_in_browser_url }}">View in your browser</a></p>'
    "<p>{{ organization.physical_address }}</p>"
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)
SAMPLE_SECONDS = 0.1


@dataclass
class MemorySampler:
    """Samples this process's resident size in a thread while a run goes on."""

    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> MemorySampler:
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._started, resident_bytes()))
            self._stop.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append((time.perf_counter() - self._started, resident_bytes()))

    def peak(self) -> int:
        return max(size for _, size in self.samples)


def resident_bytes() -> int:
    """The current resident set size (not the lifetime peak: the data set may have been
    built by this process before)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def dataset(runtime: Runtime, scale: int, events: int, *, slug: str = datagen.SLUG) -> uuid.UUID:
    """The data set's tenant: one of this scale and seed is reused whatever its events."""
    with runtime.database.session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
        marker = datagen._marker(session, tenant_id) if tenant_id is not None else None
    if marker and (marker.get("version"), marker.get("contacts"), marker.get("seed")) == (
        VERSION,
        scale,
        SEED,
    ):
        events = int(marker["events"])
    tenant_id, _info = datagen.ensure_dataset(
        runtime, contacts=scale, events=events, seed=SEED, slug=slug
    )
    return tenant_id


def verified_sender(session: Session, tenant_id: uuid.UUID) -> None:
    """The organization's address (CAN-SPAM) and DOMAIN as a verified sending domain
    (the bench has no DNS to publish in: it is recorded as verified)."""
    tenancy.update_tenant_settings(
        session, tenant_id=tenant_id, actor=SYSTEM, physical_address=ADDRESS
    )
    domain = session.scalar(
        select(SendingDomain).where(
            SendingDomain.tenant_id == tenant_id, SendingDomain.name == DOMAIN
        )
    )
    if domain is None:
        session.add(
            SendingDomain(
                tenant_id=tenant_id,
                name=DOMAIN,
                state="verified",
                created_by_type="system",
                created_by_id="bench",
            )
        )


def _prepare(session: Session, keys: TenantKeys) -> uuid.UUID:
    """The organization's address, a verified sending domain, a segment, a template and
    a draft campaign; returns the campaign's id."""
    tenant_id = keys.tenant_id
    verified_sender(session, tenant_id)
    run = uuid.uuid4().hex[:8]
    segment = segments.create_segment(
        session,
        tenant_id,
        name=f"bench campaign {run}",
        description="every contact whose email is not suppressed",
        rule={"not": {"suppressed": "email"}},
        actor=SYSTEM,
    )
    template = templates.create_template(
        session,
        tenant_id,
        name=f"bench flu shots {run}",
        kind="marketing",
        subject=SUBJECT,
        html=HTML,
        text=None,
        actor=SYSTEM,
    )
    body: dict[str, Any] = {
        "name": f"Flu shots {run}",
        "segment_id": str(segment.id),
        "template_id": str(template.id),
        "from": f"news@{DOMAIN}",
        "from_name": "Riverside Clinic",
        "purpose": "marketing",
        "tags": ["bench"],
    }
    campaign = campaigns.create_campaign(
        session, keys, CampaignIn.model_validate(body), actor=SYSTEM
    )
    return campaign.id


def _progress(runtime: Runtime, keys: TenantKeys, campaign_id: uuid.UUID) -> tuple[int, int, str]:
    """(contacts taken, audience, state) of the campaign."""
    with runtime.bound_session(keys) as session:
        campaign = campaigns.get_campaign(session, keys.tenant_id, campaign_id)
        taken = campaign.queued + campaign.suppressed + campaign.skipped
        return taken, campaign.audience, campaign.state


def _clean_up(runtime: Runtime, keys: TenantKeys, campaign_id: uuid.UUID) -> None:
    """Delete the run's campaign (its messages and their events go with it), its
    timeline entries and its audience snapshot."""
    with runtime.bound_session(keys) as session:
        snapshot_id = session.scalar(select(Campaign.snapshot_id).where(Campaign.id == campaign_id))
        session.execute(
            delete(ContactEvent).where(
                ContactEvent.tenant_id == keys.tenant_id, ContactEvent.campaign_id == campaign_id
            )
        )
        session.execute(delete(Campaign).where(Campaign.id == campaign_id))
        if snapshot_id is not None:
            session.execute(delete(SegmentSnapshot).where(SegmentSnapshot.id == snapshot_id))


@dataclass
class Result:
    seconds: float
    messages: int
    audience: int
    peak_rss_mb: float
    rss_at_10_mb: float
    rss_at_end_mb: float
    counts: dict[str, int]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def send_campaign(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    *,
    keep: bool = False,
    progress: Callable[[str], None] = print,
) -> Result:
    """One run: create, press send, queue everything; the figures."""
    with runtime.database.session() as session:
        keys = runtime.keyring.load(session, tenant_id)
    with runtime.bound_session(keys) as session:
        campaign_id = _prepare(session, keys)
    sampler = MemorySampler().start()
    try:
        started = time.perf_counter()
        with runtime.bound_session(keys) as session:
            campaigns.schedule_campaign(session, keys, campaign_id, None, actor=SYSTEM)
        rss_at_10: int | None = None
        next_tenth = 1
        while True:
            taken_now = campaigns.advance_campaign(runtime, keys, campaign_id, max_batches=1)
            taken, audience, state = _progress(runtime, keys, campaign_id)
            if rss_at_10 is None and audience and taken >= audience / 10:
                rss_at_10 = resident_bytes()
            while audience and taken >= audience * next_tenth / 10 and next_tenth <= 10:
                elapsed, rss_mb = time.perf_counter() - started, resident_bytes() / 2**20
                progress(
                    f"campaign_send: {taken:,}/{audience:,} contacts taken, {elapsed:.1f} s, "
                    f"rss {rss_mb:.0f} MB, load {_load()}"
                )
                next_tenth += 1
            if taken_now == 0 and state != CampaignState.SCHEDULED:
                break
        seconds = time.perf_counter() - started
    finally:
        sampler.stop()
    with runtime.bound_session(keys) as session:
        counts = campaigns.state_counts(session, campaign_id)
    end = sampler.samples[-1][1]
    result = Result(
        seconds=seconds,
        messages=sum(counts.values()),
        audience=audience,
        peak_rss_mb=sampler.peak() / 2**20,
        rss_at_10_mb=(rss_at_10 or end) / 2**20,
        rss_at_end_mb=end / 2**20,
        counts=counts,
    )
    if not keep:
        _clean_up(runtime, keys, campaign_id)
    return result


def run(options: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog="python -m bench campaign_send", description=__doc__)
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help="contacts in the data set")
    parser.add_argument(
        "--events", type=int, default=0, help="events of a data set built for this run"
    )
    parser.add_argument("--database", default=os.environ.get("CAREPOST_DATABASE_URL"))
    args = parser.parse_args(options)
    url = args.database
    if not url:
        workdir = Path(tempfile.mkdtemp(prefix="carepost-bench-"))
        url = f"sqlite:///{workdir / 'campaign.db'}"
        os.environ.setdefault("CAREPOST_MASTER_KEY_FILE", str(workdir / "master.key"))
    runtime = datagen.open_runtime(url)
    try:
        tenant_id = dataset(runtime, args.scale, args.events)
        load_before = _load()
        result = send_campaign(runtime, tenant_id)
        engine = runtime.database.engine.dialect.name
    finally:
        runtime.close()
    print(
        f"campaign_send seconds_to_last_queued={result.seconds:.1f} "
        f"messages/s={result.rate:.0f} peak_rss_mb={result.peak_rss_mb:.0f} "
        f"rss_growth_mb={result.rss_at_end_mb - result.rss_at_10_mb:.1f}",
        flush=True,
    )
    print(
        f"campaign_send audience={result.audience} messages={result.messages} "
        f"states={','.join(f'{k}:{v}' for k, v in sorted(result.counts.items()))} "
        f"rss_at_10%_mb={result.rss_at_10_mb:.0f} rss_at_100%_mb={result.rss_at_end_mb:.0f} "
        f"engine={engine} load_before={load_before} load_after={_load()}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    run([])
