"""``python -m bench`` (``make bench``): runs carepost's benchmarks.

Each benchmark prints ``<name> <metric>=<value>`` lines. Run one by name
(``python -m bench contacts_batch``) or all without arguments. They use the
engine in ``CAREPOST_DATABASE_URL`` (SQLite in a temporary directory when unset).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import contacts_batch

BENCHMARKS: dict[str, Callable[[], object]] = {"contacts_batch": contacts_batch.run}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or sorted(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
