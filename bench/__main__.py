"""``python -m bench`` (``make bench``): runs carepost's benchmarks.

Each benchmark prints ``<name> <metric>=<value>`` lines, with the ratio to the
target named in its issue. Run one by name (``python -m bench contacts_batch``)
or all without arguments; options after the names go to the benchmarks named
(``python -m bench csv_import --rows 1000000``, ``python -m bench segment_count
--scale 100000``, ``python -m bench campaign_send --scale 1000000``). ``python -m
bench floors`` measures the work issue 4's and issue 5's targets cannot do without
on this machine, and the ceiling it leaves (bench/floors.py). They use the
engine in ``CAREPOST_DATABASE_URL`` (SQLite in a temporary directory when unset).

Commands with options of their own run alone: ``python -m bench datagen
--contacts 1000000 --events 10000000 --seed 1 [--database URL]`` builds (or
reuses) the benchmark data set (bench/datagen.py).

Logging is configured as ``carepost`` configures it in production (JSON lines at
``CAREPOST_LOG_LEVEL``, default info), into ``CAREPOST_LOG_FILE`` or else
``carepost-bench.log`` in the temporary directory, so what is measured includes the
log lines a deployment writes, and the figures are not lost among them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import (
    campaign_send,
    contacts_batch,
    csv_import,
    datagen,
    e2ee_encrypt,
    email_batch,
    email_e2e,
    floors,
    gateway,
    segment_count,
    smtp_baseline,
    workflows,
)
from carepost.core.logging import configure_logging

BENCHMARKS: dict[str, Callable[[list[str]], object]] = {
    "campaign_send": campaign_send.run,
    "contacts_batch": lambda _options: contacts_batch.run(),
    "csv_import": csv_import.run,
    "e2ee_encrypt": lambda _options: e2ee_encrypt.run(),
    "email_batch": email_batch.run,
    "email_e2e": email_e2e.run,
    "floors": floors.run,
    "gateway": gateway.run,
    "segment_count": segment_count.run,
    "smtp_baseline": smtp_baseline.run,
    "workflows": workflows.run,
}
LOG_NAME = "carepost-bench.log"
# Commands that take their own arguments: ``python -m bench <name> --option ...``.
COMMANDS: dict[str, Callable[[list[str]], int]] = {"datagen": datagen.main}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    split = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:split], args[split:]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    log_file = os.environ.get("CAREPOST_LOG_FILE") or Path(tempfile.gettempdir()) / LOG_NAME
    configure_logging(os.environ.get("CAREPOST_LOG_LEVEL", "info"), "json", Path(log_file))
    for name in names or sorted(BENCHMARKS):
        BENCHMARKS[name](options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
