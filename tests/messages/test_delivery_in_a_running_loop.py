"""Delivery called from a thread that already runs an event loop still delivers."""

from __future__ import annotations

import asyncio
import threading

from carepost.messages import delivery


def test_delivery_runs_beside_a_running_event_loop() -> None:
    done: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0)
        done.append("delivered")

    async def host() -> None:
        delivery._run_to_completion(work())

    # A thread of its own runs the host loop (the browser tests may keep one here).
    thread = threading.Thread(target=lambda: asyncio.run(host()))
    thread.start()
    thread.join()
    delivery._run_to_completion(work())
    assert done == ["delivered", "delivered"]
