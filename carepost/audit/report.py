"""What verifying the audit trail finds: named problems, chain heads, the report.

A problem names the chain, the ``seq``, the event id when the event still exists,
and what is wrong; ``describe()`` turns it into a line a compliance officer reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class ProblemKind(StrEnum):
    CONTENT_EDITED = "content-edited"
    HASH_ALTERED = "hash-altered"
    PREV_HASH_ALTERED = "prev-hash-altered"
    REORDERED = "reordered"
    LINK_BROKEN = "link-broken"
    MISSING = "missing"
    DUPLICATE_SEQ = "duplicate-seq"
    OUT_OF_ORDER = "out-of-order"
    TRUNCATED = "truncated"
    BEYOND_HEAD = "beyond-head"
    HEAD_FORGED = "head-forged"
    HEAD_MISSING = "head-missing"
    ANCHOR_MISMATCH = "anchor-mismatch"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Problem:
    """One fault in a chain, located as precisely as the evidence allows."""

    chain: str
    seq: int | None
    event_id: str | None
    kind: ProblemKind
    message: str
    line: int | None = None  # line number in an export, for offline verification

    def describe(self) -> str:
        where = f"chain {self.chain}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.event_id is not None:
            where += f" (event {self.event_id})"
        if self.line is not None:
            where = f"line {self.line}: {where}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ChainHead:
    """A chain's last event: record it outside carepost to anchor the chain."""

    chain: str
    seq: int
    hash: str


@dataclass
class VerificationReport:
    chains_checked: int = 0
    events_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    heads: dict[str, ChainHead] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_omitted

    def describe(self, *, heads: bool = True) -> list[str]:
        """Human-readable lines: each problem, a summary, then each chain's head."""
        lines = [problem.describe() for problem in self.problems]
        if self.problems_omitted:
            lines.append(f"... and {self.problems_omitted} more problems")
        total = len(self.problems) + self.problems_omitted
        verdict = "ok" if self.ok else f"{total} problem{'s' if total != 1 else ''}"
        lines.append(
            f"{verdict}: {self.events_checked} events in {self.chains_checked} chains checked"
        )
        if heads:
            lines.extend(
                f"chain {head.chain} head seq {head.seq} hash {head.hash}"
                for head in sorted(self.heads.values(), key=lambda h: h.chain)
            )
        return lines


class ProblemLog:
    """Problems found so far, capped so that a mass rewrite cannot exhaust memory."""

    def __init__(self, report: VerificationReport, limit: int) -> None:
        self.report = report
        self.limit = limit

    def add(self, problem: Problem) -> int | None:
        if len(self.report.problems) >= self.limit:
            self.report.problems_omitted += 1
            return None
        self.report.problems.append(problem)
        return len(self.report.problems) - 1

    def relabel(self, index: int | None, kind: ProblemKind, message: str) -> None:
        """Restate a problem found earlier once later evidence explains it better."""
        if index is not None:
            problem = self.report.problems[index]
            self.report.problems[index] = replace(problem, kind=kind, message=message)
