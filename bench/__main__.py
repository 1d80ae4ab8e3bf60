"""``python -m bench`` (``make bench``): runs carepost's benchmarks.

Each benchmark prints ``<name> <metric>=<value>`` lines. Run one by name
(``python -m bench contacts_batch``) or all without arguments; options after the
names go to the benchmarks that take them (``python -m bench segment_count --scale
100000``). They use the
engine in ``CAREPOST_DATABASE_URL`` (SQLite in a temporary directory when unset).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import contacts_batch, segment_count

BENCHMARKS: dict[str, Callable[..., object]] = {
    "contacts_batch": contacts_batch.run,
    "segment_count": segment_count.run,
}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    first_option = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:first_option] or sorted(BENCHMARKS), args[first_option:]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        if options:
            BENCHMARKS[name](options)
        else:
            BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
