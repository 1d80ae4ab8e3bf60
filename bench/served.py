"""The API as a deployment runs it: ``carepost serve --workers N`` in its own processes,
with N clients posting over loopback HTTP at once.

The in-process benchmarks (a TestClient, one request at a time) measure the API's
CPU per message on one core; a deployment serves concurrent requests with several
server processes, which is what :func:`post_concurrently` measures. The server
processes and the PostgreSQL backends serving them are measured by their CPU time
from ``/proc`` (the server's workers are the children of the ``carepost serve``
process; the backends are the client backends that ran during the run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Served:
    """A running ``carepost serve``: where it listens and its processes."""

    base_url: str
    process: subprocess.Popen[bytes]

    def worker_pids(self) -> set[int]:
        """The server's processes: ``carepost serve`` and the workers uvicorn started."""
        pids = {self.process.pid}
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with suppress(OSError):
            pids |= {int(pid) for pid in children.read_text().split()}
        return pids


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(env: dict[str, str], processes: int, *, ready_seconds: float = 60) -> Iterator[Served]:
    """``carepost serve --workers processes`` on a free loopback port with ``env`` (the
    bench's ``CAREPOST_*`` settings); stopped when the block ends."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAREPOST_")}
    command = [sys.executable, "-m", "carepost", "serve", "--no-migrate"]
    command += ["--workers", str(processes), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command,
        env=clean | {"CAREPOST_LOG_LEVEL": "warning"} | env,
        stdout=subprocess.DEVNULL,
    )
    served = Served(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"carepost serve exited with {process.returncode}")
            with suppress(httpx.HTTPError):  # not listening yet
                if httpx.get(served.base_url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("carepost serve did not become ready")
            time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client_backends(engine: Engine) -> set[int]:
    """The PostgreSQL client backends alive now (this process's own among them): a run's
    backends are those alive before it and those it opened (alive after it)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'")
        )
        return {int(pid) for (pid,) in rows}


def post_concurrently(
    base_url: str,
    path: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    clients: int,
    check: Callable[[int, httpx.Response], None],
) -> float:
    """POST every body to ``path`` from ``clients`` threads, each taking the next body
    when its answer came; ``check(number, response)`` raises on a wrong answer.
    Returns the wall-clock seconds from the first request to the last answer."""
    pending = list(enumerate(bodies))
    pending.reverse()
    lock = threading.Lock()
    failures: list[Exception] = []

    def client() -> None:
        while not failures:
            with lock:
                if not pending:
                    return
                number, body = pending.pop()
            try:
                # A connection per request: the server process that accepts it is the
                # one free to (a kept-alive connection stays with its first process).
                answer = httpx.post(base_url + path, content=body, headers=headers, timeout=300)
                check(number, answer)
            except (AssertionError, httpx.HTTPError) as error:  # raised by the caller
                failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return elapsed
