"""The gateway benchmark runs end to end on a small count: the sink accepts and the
gateway durably queues every message (each loop checks its own count)."""

from __future__ import annotations

from bench.gateway import measure


def test_gateway_bench_runs_tiny():
    sink, gateway, sink_cpu_us, gateway_cpu_us = measure(60, connections=5)
    assert sink > 0 and gateway > 0
    assert sink_cpu_us > 0 and gateway_cpu_us > 0
