"""Verifying the audit trail end to end: every event's hash, every link, every head.

Events are streamed chain by chain in ``seq`` order (``yield_per``), so memory stays
flat however long the trail is; only a few values per chain are kept. Each fault is
*named*: the chain, the ``seq``, the event id when the event still exists, and what
is wrong with it (edited, re-linked, moved, deleted, truncated, forged head). The
same checks run on a JSON Lines export without a database (:func:`verify_export_lines`),
with the hash function of :mod:`carepost.audit.service`, so an auditor can re-verify
an export on their own machine.

A chain rewritten from some event up to its head, with every hash recomputed, is
consistent by construction: the hash chain needs no secret. Compare the heads in the
report with heads recorded elsewhere earlier (``anchors``) to catch that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from carepost.audit.models import AuditEvent, AuditHead
from carepost.audit.report import ChainHead, Problem, ProblemKind, ProblemLog, VerificationReport
from carepost.audit.service import GENESIS_HASH, HASHED_FIELDS, content_hash, event_content
from carepost.core.database import READ_SNAPSHOT

__all__ = [
    "ChainHead",
    "Problem",
    "ProblemKind",
    "VerificationReport",
    "reading_connection",
    "verify_chains",
    "verify_export_lines",
]

# How far from its stored seq a moved event's original seq is searched for, to tell
# "rows reordered" from "content edited". Past that distance it reads as an edit.
MOVE_SEARCH_DISTANCE = 64
BATCH_SIZE = 2000
DEFAULT_MAX_PROBLEMS = 1000
HASH_ALTERED_MESSAGE = "stored hash changed after it was written (content intact)"


def _short(digest: str) -> str:
    return f"{digest[:16]}…"


@dataclass
class _ChainCheck:
    """The state of one chain's walk: just enough about the previous event."""

    chain: str
    log: ProblemLog
    anchor: ChainHead | None = None
    partial: bool = False  # a filtered export: gaps expected, no start at seq 1
    events: int = 0
    last_seq: int = 0
    last_id: str | None = None
    last_hash: str = GENESIS_HASH  # as stored: what the next event must link to
    last_recomputed: str = GENESIS_HASH  # what the last event's content hashes to
    last_problem: int | None = None  # index of a problem raised on the last event
    last_kind: ProblemKind | None = None
    anchor_seen: bool = False

    def feed(self, content: dict[str, Any], stored_hash: str, line: int | None = None) -> None:
        seq: int = content["seq"]
        event_id: str = content["id"]
        self.events += 1

        def problem(
            kind: ProblemKind,
            message: str,
            at_seq: int | None = seq,
            at_event: str | None = event_id,
        ) -> int | None:
            return self.log.add(Problem(self.chain, at_seq, at_event, kind, message, line))

        if self.events > 1 and seq == self.last_seq:
            problem(ProblemKind.DUPLICATE_SEQ, f"a second event with seq {seq}")
            return
        if self.events > 1 and seq < self.last_seq:
            problem(ProblemKind.OUT_OF_ORDER, f"comes after seq {self.last_seq}")
            return
        if seq < 1:
            problem(ProblemKind.OUT_OF_ORDER, "seq is not a positive number")
            return

        expected = self.last_seq + 1
        gap = seq > expected and not self.partial
        if gap:
            missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}-{seq - 1}"
            problem(
                ProblemKind.MISSING,
                f"{missing} missing (deleted); the next event, seq {seq} (event {event_id}), "
                f"links to a vanished event with hash {_short(content['prev_hash'])}",
                at_seq=expected,
                at_event=None,
            )
        linked = seq == expected and (self.events > 1 or not self.partial)

        recomputed = content_hash(content)
        kind: ProblemKind | None = None
        index: int | None = None
        if recomputed != stored_hash:
            kind, message = self._diagnose(content, stored_hash, linked)
            index = problem(kind, message)
        elif linked and content["prev_hash"] != self.last_hash and self.last_kind is None:
            if self.events == 1:
                problem(
                    ProblemKind.LINK_BROKEN,
                    "the first event does not start from the genesis hash",
                )
            else:
                problem(
                    ProblemKind.LINK_BROKEN,
                    f"prev_hash does not match the hash of seq {self.last_seq} "
                    f"(event {self.last_id}): one of the two was rewritten",
                )
        if (
            linked
            and self.last_kind is ProblemKind.CONTENT_EDITED
            and content["prev_hash"] == self.last_recomputed
            and self.last_hash != self.last_recomputed
        ):
            # The previous event's content is what its successor linked to: only its
            # stored hash was changed.
            self.log.relabel(self.last_problem, ProblemKind.HASH_ALTERED, HASH_ALTERED_MESSAGE)

        if self.anchor is not None and seq == self.anchor.seq:
            self.anchor_seen = True
            if stored_hash != self.anchor.hash or recomputed != self.anchor.hash:
                problem(
                    ProblemKind.ANCHOR_MISMATCH,
                    f"differs from the anchored head (hash {_short(self.anchor.hash)}): "
                    "the chain was rewritten after the anchor was taken",
                )

        self.last_seq = seq
        self.last_id = event_id
        self.last_hash = stored_hash
        self.last_recomputed = recomputed
        self.last_kind = kind
        self.last_problem = index

    def _diagnose(
        self, content: dict[str, Any], stored_hash: str, linked: bool
    ) -> tuple[ProblemKind, str]:
        """Why an event's content no longer matches its hash."""
        seq: int = content["seq"]
        if linked and content["prev_hash"] != self.last_hash:
            relinked = content_hash({**content, "prev_hash": self.last_hash})
            if relinked == stored_hash:
                return (
                    ProblemKind.PREV_HASH_ALTERED,
                    f"prev_hash changed after it was written (it linked to seq {self.last_seq})",
                )
        low = max(1, seq - MOVE_SEARCH_DISTANCE)
        for original in range(low, seq + MOVE_SEARCH_DISTANCE + 1):
            if original != seq and content_hash({**content, "seq": original}) == stored_hash:
                return (
                    ProblemKind.REORDERED,
                    f"written as seq {original}, now stored as seq {seq}: "
                    "events reordered or renumbered",
                )
        return ProblemKind.CONTENT_EDITED, "content edited after it was written"

    def check_head(self, head_seq: int | None, head_hash: str | None) -> None:
        """Compare the chain with its ``audit_heads`` row (``None``: the row is gone)."""
        if head_seq is None or head_hash is None:
            if self.events:
                self.log.add(
                    Problem(
                        self.chain,
                        None,
                        None,
                        ProblemKind.HEAD_MISSING,
                        f"has {self.events} events but no head row (head deleted)",
                    )
                )
            return
        if head_seq > self.last_seq:
            missing = (
                f"seq {head_seq}"
                if head_seq == self.last_seq + 1
                else f"seqs {self.last_seq + 1}-{head_seq}"
            )
            self.log.add(
                Problem(
                    self.chain,
                    self.last_seq + 1,
                    None,
                    ProblemKind.TRUNCATED,
                    f"{missing} missing: the head records seq {head_seq} but the chain ends at "
                    f"seq {self.last_seq} (tail deleted)",
                )
            )
        elif head_seq < self.last_seq:
            self.log.add(
                Problem(
                    self.chain,
                    head_seq + 1,
                    None,
                    ProblemKind.BEYOND_HEAD,
                    f"events after the head: the head records seq {head_seq} but the chain runs "
                    f"to seq {self.last_seq} (events added behind the trail's back, or head "
                    "rolled back)",
                )
            )
        elif head_hash != self.last_hash:
            if self.last_kind is ProblemKind.CONTENT_EDITED and head_hash == self.last_recomputed:
                self.log.relabel(self.last_problem, ProblemKind.HASH_ALTERED, HASH_ALTERED_MESSAGE)
            elif self.last_kind is None:
                # (A last event already found faulty explains a head that disagrees.)
                self.log.add(
                    Problem(
                        self.chain,
                        self.last_seq,
                        self.last_id,
                        ProblemKind.HEAD_FORGED,
                        f"the head's hash {_short(head_hash)} is not this last event's hash "
                        f"{_short(self.last_hash)}: head forged or last event replaced",
                    )
                )

    def check_anchor_reached(self) -> None:
        if self.anchor is not None and not self.anchor_seen:
            self.log.add(
                Problem(
                    self.chain,
                    self.anchor.seq,
                    None,
                    ProblemKind.ANCHOR_MISMATCH,
                    f"the anchored head is gone: the chain ends at seq {self.last_seq}",
                )
            )

    def head(self) -> ChainHead:
        return ChainHead(self.chain, self.last_seq, self.last_hash)


@contextmanager
def reading_connection(session: Session) -> Iterator[Connection]:
    """The connection to read the trail through, without holding up writers.

    Inside a transaction: the session's own connection, which sees the caller's
    writes. Otherwise, on SQLite, a connection of its own in a deferred read snapshot
    (WAL), so a long verification or export never holds SQLite's write lock.
    """
    session.flush()
    bind = session.get_bind()
    if session.in_transaction() or not isinstance(bind, Engine) or bind.dialect.name != "sqlite":
        yield session.connection()
        return
    with bind.connect() as connection:
        connection.execution_options(**{READ_SNAPSHOT: True})
        with connection.begin():
            yield connection


def _event_rows(
    connection: Connection, chain: str | None, after_seq: int = 0, up_to_seq: int | None = None
) -> Iterator[Any]:
    statement = select(*AuditEvent.__table__.columns).order_by(AuditEvent.chain, AuditEvent.seq)
    if chain is not None:
        statement = statement.where(AuditEvent.chain == chain)
    if after_seq:
        statement = statement.where(AuditEvent.seq > after_seq)
    if up_to_seq is not None:
        statement = statement.where(AuditEvent.seq <= up_to_seq)
    yield from connection.execute(statement, execution_options={"yield_per": BATCH_SIZE})


def verify_chains(
    session: Session,
    *,
    chain: str | None = None,
    anchors: Mapping[str, ChainHead] | None = None,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
) -> VerificationReport:
    """Verify every chain (or one) end to end, naming each fault found.

    ``anchors`` are heads recorded elsewhere earlier (from a previous report's
    ``heads``); each must still be part of its chain unchanged. Safe while others
    append: events committed after the walk began are verified too, up to the head.
    """
    report = VerificationReport()
    log = ProblemLog(report, max_problems)
    anchors = anchors or {}
    checks: dict[str, _ChainCheck] = {}

    def check_for(name: str) -> _ChainCheck:
        if name not in checks:
            checks[name] = _ChainCheck(name, log, anchor=anchors.get(name))
        return checks[name]

    with reading_connection(session) as connection:
        for row in _event_rows(connection, chain):
            check_for(row.chain).feed(event_content(row), row.hash)

        # Heads are read after the events: a head only ever moves forward, so an event
        # beyond its head is a fault, and a head beyond the events is a concurrent
        # append (verified now, up to that head) or a deleted tail.
        head_query = select(AuditHead.chain, AuditHead.seq, AuditHead.last_hash)
        if chain is not None:
            head_query = head_query.where(AuditHead.chain == chain)
        heads = {name: (seq, last_hash) for name, seq, last_hash in connection.execute(head_query)}

        for name in sorted(set(checks) | set(heads)):
            check = check_for(name)
            head_seq, head_hash = heads.get(name, (None, None))
            if head_seq is not None and head_seq > check.last_seq:
                for row in _event_rows(connection, name, check.last_seq, head_seq):
                    check.feed(event_content(row), row.hash)
            check.check_head(head_seq, head_hash)
            check.check_anchor_reached()
            report.heads[name] = check.head()
            report.events_checked += check.events
    for name in sorted(set(anchors) - set(checks)):
        if chain is None or name == chain:
            log.add(
                Problem(
                    name,
                    None,
                    None,
                    ProblemKind.ANCHOR_MISMATCH,
                    "an anchored chain no longer exists",
                )
            )
    report.chains_checked = len(checks)
    return report


def _parse_line(text: str) -> tuple[dict[str, Any], str] | str:
    """An export line's hashed content and stored hash, or why it cannot be read."""
    try:
        value = json.loads(text)
    except ValueError:
        return "not valid JSON"
    if not isinstance(value, dict):
        return "not a JSON object"
    expected = {*HASHED_FIELDS, "hash"}
    missing = sorted(expected - value.keys())
    if missing:
        return f"fields missing: {', '.join(missing)}"
    extra = sorted(value.keys() - expected)
    if extra:
        return f"fields not covered by the hash: {', '.join(extra)}"
    if not isinstance(value["seq"], int) or isinstance(value["seq"], bool):
        return "seq is not an integer"
    for name in ("chain", "id", "prev_hash", "hash"):
        if not isinstance(value[name], str):
            return f"{name} is not a string"
    content = {name: value[name] for name in HASHED_FIELDS}
    try:
        json.dumps(content, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # an escaped lone surrogate ("\ud800") is no text at all
        return "holds text that is not valid Unicode"
    return content, value["hash"]


def verify_export_lines(
    lines: Iterable[str],
    *,
    partial: bool = False,
    anchors: Mapping[str, ChainHead] | None = None,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
) -> VerificationReport:
    """Verify a JSON Lines export offline: no database, no secret.

    A full export must hold its chains from seq 1 without gaps. ``partial=True`` is
    for filtered exports: events may be missing between lines, and links are checked
    wherever two consecutive seqs follow each other. The report's heads are the last
    event of each chain in the export: compare them with an anchored head to know the
    export is complete. Each item of ``lines`` holds whole lines: a line, a file's
    lines as iterated, or the chunks :func:`export_events` yields.
    """
    report = VerificationReport()
    log = ProblemLog(report, max_problems)
    anchors = anchors or {}
    checks: dict[str, _ChainCheck] = {}
    number = 0
    for chunk in lines:
        # Only "\n" ends a line (JSON Lines); str.splitlines() would also split inside
        # strings holding U+2028, U+0085 and the like.
        for text in chunk.removesuffix("\n").split("\n"):
            number += 1
            if not text.strip():
                continue
            parsed = _parse_line(text)
            if isinstance(parsed, str):
                log.add(Problem("?", None, None, ProblemKind.MALFORMED, parsed, number))
                continue
            content, stored_hash = parsed
            name = content["chain"]
            if name not in checks:
                checks[name] = _ChainCheck(name, log, anchor=anchors.get(name), partial=partial)
            checks[name].feed(content, stored_hash, number)
    for name, check in sorted(checks.items()):
        if not partial:
            check.check_anchor_reached()
        report.heads[name] = check.head()
        report.events_checked += check.events
    report.chains_checked = len(checks)
    return report
