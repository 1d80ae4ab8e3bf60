"""``python -m bench`` (``make bench``): runs carepost's benchmarks.

Benchmarks arrive with the parts of carepost they measure (the send pipeline,
segment queries, CSV imports); until then this says so instead of failing.
"""

from __future__ import annotations


def main() -> int:
    print("No benchmarks yet: they arrive with the send pipeline, segments and imports.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
