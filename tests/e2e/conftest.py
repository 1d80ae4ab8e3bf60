"""Browser tests: a real uvicorn server on a free loopback port (in a thread, on the
test run's database) driven by Debian's Chromium through Playwright.

The server runs with ``cookie_secure=True`` like production: Chromium treats
http://127.0.0.1 as a secure context, so it keeps ``Secure`` cookies there (the
sign-in test checks that it does).

A missing Chromium is a failure with instructions, never a skip: ``make test``
installs it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

CHROMIUM = Path(os.environ.get("CAREPOST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("CAREPOST_TEST_ARTIFACTS", "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(app, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port unless given) in a thread."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,  # keep the suite's structlog setup (and its PHI/secret scan)
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the test server did not start on 127.0.0.1:{port}", pytrace=False)
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:
    """The console and API served by uvicorn on http://127.0.0.1:<free port>."""
    with serve(app) as url:
        yield url


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium was not found at {CHROMIUM}. The browser tests need it: run "
            "`make test` (it installs Debian's chromium), or `apt-get install chromium`, "
            "or point CAREPOST_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class PageProblems:
    """Console messages and page errors: a CSP violation or a script error fails the test.

    Chromium also logs every 4xx/5xx answer as "Failed to load resource"; the console
    answers form errors with 4xx on purpose, so those lines are not problems."""

    EXPECTED = "Failed to load resource: the server responded with a status of"

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_console(self, message) -> None:
        if message.type in ("error", "warning") and not message.text.startswith(self.EXPECTED):
            self.messages.append(f"{message.type}: {message.text}")

    def on_page_error(self, error) -> None:
        self.messages.append(f"page error: {error}")


def open_page(chromium, base_url: str):
    """A new browser context and page on ``base_url`` that records console problems."""
    context = chromium.new_context(
        base_url=base_url,
        viewport={"width": 1280, "height": 860},
        locale="en-US",
        timezone_id="UTC",
    )
    context.set_default_timeout(10_000)
    opened = context.new_page()
    problems = PageProblems()
    opened.on("console", problems.on_console)
    opened.on("pageerror", problems.on_page_error)
    opened.problems = problems
    return context, opened


# HTMX marks a request in flight, then the swap, then the new content until it settles
# (20 ms after the swap); only then are the new elements wired up, so a change made
# earlier would never reach the server.
HTMX_BUSY = ".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added"


def settle(page) -> None:
    """Wait until the page's HTMX requests are answered and their content is live."""
    from playwright.sync_api import expect

    page.wait_for_load_state("load")
    expect(page.locator(HTMX_BUSY)).to_have_count(0)


def sign_in(page, organization: str, email: str, password: str) -> None:
    """Fill the sign-in form as a person does and submit it (the caller checks where
    it lands: the dashboard, the password change, two-factor)."""
    page.goto("/login")
    page.get_by_label("Organization").fill(organization)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def page(chromium, live_server):
    context, opened = open_page(chromium, live_server)
    yield opened
    context.close()
    problems = opened.problems
    assert not problems.messages, "browser reported problems:\n" + "\n".join(problems.messages)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
