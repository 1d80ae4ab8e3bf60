"""Background jobs of the audit trail, run by ``carepost worker``.

Anchoring: the hash chain needs no secret, so someone with write access to the
database could rewrite a chain from some event to its head and recompute every
hash. Writing each chain's head (seq and hash) to the logs every hour puts a copy
outside the database; ship the logs to write-once storage and a later
``carepost audit verify`` can be checked against them.
"""

from __future__ import annotations

from sqlalchemy import select

from carepost.audit.models import AuditHead
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.core.worker import JobRegistry, PeriodicJob

ANCHOR_EVERY_SECONDS = 3600.0

log = get_logger(__name__)


def log_chain_heads(runtime: Runtime) -> int:
    """Log the head of every audit chain (one line each); returns how many chains."""
    with runtime.database.session() as session:
        heads = session.execute(
            select(AuditHead.chain, AuditHead.seq, AuditHead.last_hash).order_by(AuditHead.chain)
        ).all()
    for chain, seq, last_hash in heads:
        log.info("audit.anchor", chain=chain, seq=seq, head_hash=last_hash)
    return len(heads)


def register_jobs(registry: JobRegistry) -> None:
    registry.add(
        PeriodicJob(
            "audit.anchor_heads",
            ANCHOR_EVERY_SECONDS,
            log_chain_heads,
            "log each audit chain's head hash, to anchor the trail outside the database",
        )
    )
