"""The README's first command, for real: a fresh copy of the project, ``make run``, and
the demo admin signing in to the console with the printed one-time password and TOTP.

The copy holds exactly what a clone would (tracked and unignored files), so ``make
run`` builds its own virtual environment from pyproject.toml as it does on a new
machine. On the PostgreSQL pass of the suite, the same run is pointed at PostgreSQL
(``CAREPOST_DATABASE_URL``, in a schema of its own), which is the README's recipe for
switching databases.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, text

from tests.canaries import secret_value
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 900  # a cold pip cache on a new machine downloads every dependency


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _copy_project(destination: Path) -> None:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


class Output:
    """The lines a background process prints, collected by a reader thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> str | None:
        for line in self.lines:
            found = re.search(pattern, line)
            if found:
                return found.group(1)
        return None

    def tail(self) -> str:
        return "\n".join(self.lines[-40:])


@pytest.fixture
def database_environment(settings) -> Iterator[dict[str, str]]:
    """Where ``make run`` keeps its data: SQLite under ./var (the default), or, on the
    PostgreSQL pass, a fresh schema of the test database."""
    if settings.is_sqlite:
        yield {}
        return
    schema = f"quickstart_{uuid.uuid4().hex[:10]}"
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield {"CAREPOST_DATABASE_URL": settings.database_url, "CAREPOST_DATABASE_SCHEMA": schema}
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def make_run(tmp_path, database_environment) -> Iterator[tuple[str, Output]]:
    checkout = tmp_path / "carepost"
    _copy_project(checkout)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CAREPOST_")
    }
    environment |= {"CAREPOST_PORT": str(port), "CAREPOST_BASE_URL": base_url}
    environment |= database_environment
    process = subprocess.Popen(
        ["make", "run"],
        cwd=checkout,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output(process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"make run exited with {process.returncode}:\n{output.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"make run did not serve within {STARTUP_SECONDS} s:\n{output.tail()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield base_url, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_make_run_serves_and_the_demo_admin_signs_in_with_totp(make_run, chromium, screenshots):
    base_url, output = make_run
    password = output.find(r"One-time password\s+(\S+)")
    uri = output.find(r"(otpauth://\S+)")
    assert password and uri, f"make run did not print the sign-in details:\n{output.tail()}"
    secret_value(password)
    secret = secret_value(urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0])
    assert output.find(r"Console URL\s+(\S+)") == f"{base_url}/login"

    context = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, "demo", "admin@demo.example", password)

        expect(page).to_have_url(re.compile(r"/password$"))
        chosen = secret_value(f"Quickstart-{uuid.uuid4().hex[:10]}-harbor")
        page.get_by_label("Current password").fill(password)
        page.get_by_label("New password", exact=True).fill(chosen)
        page.get_by_label("New password again").fill(chosen)
        page.get_by_role("button", name="Change password").click()

        # The enrolment page offers the secret the terminal printed (the QR code there
        # and here are the same), so the authenticator the admin set up from the
        # terminal works.
        expect(page).to_have_url(re.compile(r"/mfa/enrol$"))
        shown = page.locator("#totp-secret").inner_text().replace(" ", "")
        assert shown == secret
        page.get_by_label("Code from your app").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Turn on two-factor sign-in").click()

        expect(page).to_have_url(re.compile(r"/mfa/recovery-codes$"))
        for code in page.locator("#recovery-codes li").all_inner_texts():
            secret_value(code.strip())
        page.get_by_role("link", name=re.compile("continue")).click()

        expect(page).to_have_url(f"{base_url}/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Demo Clinic")
        page.screenshot(path=str(screenshots / "quickstart-dashboard.png"), full_page=True)
    finally:
        context.close()
