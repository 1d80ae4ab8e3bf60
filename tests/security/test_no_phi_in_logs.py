"""PHI and secrets never reach the logs: not on success, not on errors, not on a crash.

The whole suite logs at DEBUG into one file, which ``pytest_sessionfinish`` scans
for every seeded PHI value and every secret the tests used (tests/conftest.py).
These tests drive the paths most likely to leak (contacts read and written,
refused, looked up, crashed) and look at the lines each one wrote.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from carepost.core.logging import get_logger
from tests.conftest import (
    PHI_CANARIES,
    SECRET_CANARIES,
    leaked_canaries,
    new_password,
    phi_value,
    secret_value,
)

CONTACTS = "/api/v1/contacts"


class LogWindow:
    """The part of the suite's log file written since the window opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def text(self) -> str:
        for handler in logging.getLogger().handlers:
            handler.flush()
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            handle.seek(self.start)
            return handle.read()

    def assert_clean(self, *values: str) -> str:
        content = self.text()
        leaked = leaked_canaries(content, set(values) | PHI_CANARIES | SECRET_CANARIES)
        assert not leaked, f"{len(leaked)} canaries in the log, e.g. one of length {len(leaked[0])}"
        return content


@pytest.fixture
def log_window(log_file: Path) -> Iterator[LogWindow]:
    yield LogWindow(log_file)


def phi_contact() -> dict[str, str]:
    return {
        "email": f"{phi_value('mail').lower()}@example.org",
        "phone": "+14155552671",
        "external_id": phi_value("mrn"),
        "first_name": phi_value("first"),
        "last_name": phi_value("last"),
        "birth_date": "1970-07-04",
    }


def test_contact_requests_leave_no_phi_in_the_logs(client, tenant, make_api_key, log_window):
    headers = make_api_key(tenant)
    body = phi_contact()
    request_ids = []

    def call(method: str, path: str, extra_headers=None, **kwargs):
        response = client.request(method, path, headers=headers | (extra_headers or {}), **kwargs)
        request_ids.append(response.headers["x-request-id"])
        return response

    created = call("POST", CONTACTS, json=body)
    assert created.status_code == 201
    contact = f"{CONTACTS}/{created.json()['id']}"
    assert call("GET", contact).json()["first_name"] == body["first_name"]
    assert call("GET", CONTACTS).status_code == 200
    assert call("POST", f"{CONTACTS}/lookup", json={"email": body["email"]}).status_code == 200
    new_name = phi_value("first")
    assert call("PATCH", contact, json={"first_name": new_name}).status_code == 200
    # Refusals that carry PHI in the request.
    assert call("POST", CONTACTS, json=body).status_code == 409
    assert call("POST", CONTACTS, json={"email": phi_value("broken")}).status_code == 422
    assert call("POST", CONTACTS, json={"phone": phi_value("phone")}).status_code == 422
    assert call("POST", CONTACTS, json={"first_name": phi_value("x") * 50}).status_code == 422
    assert call("GET", CONTACTS, params={"email": body["email"]}).status_code == 422
    malformed = b'{"first_name": "' + phi_value("cut").encode()
    assert (
        call(
            "POST",
            CONTACTS,
            content=malformed,
            extra_headers={"content-type": "application/json"},
        ).status_code
        == 422
    )
    assert call("DELETE", contact).status_code == 204
    assert call("GET", contact).status_code == 404

    content = log_window.assert_clean(*body.values(), new_name)
    # The window really holds these requests: one access line each, route templates only.
    for request_id in request_ids:
        assert request_id in content
    assert '"route": "/api/v1/contacts/{contact_id}"' in content


def test_the_suite_log_receives_debug_events(log_window):
    marker = f"debug-marker-{uuid.uuid4().hex}"
    get_logger("carepost.test").debug(marker, count=1)
    assert marker in log_window.text()


def test_a_crash_logs_the_error_type_never_its_message(runtime, log_window):
    from carepost.api.app import create_app

    phi = phi_value("crash")
    app = create_app(runtime)

    @app.get("/api/v1/test-only/crash")
    def crash() -> None:
        # What a driver error looks like: it quotes the row it refused.
        raise ValueError(f"duplicate key value (email)=({phi}@example.org)")

    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as test:
        response = test.get("/api/v1/test-only/crash")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    assert phi not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["detail"]
    content = log_window.assert_clean(phi)
    [line] = [ln for ln in content.splitlines() if "unhandled_error" in ln]
    assert request_id in line and "ValueError" in line and "test-only/crash" in line


def test_the_servers_own_traceback_carries_no_message(log_window):
    """uvicorn logs 'Exception in ASGI application' with the traceback through the
    standard library; the formatter keeps the type and frames, not the message."""
    phi = phi_value("server")
    try:
        raise RuntimeError(f"could not render {phi}")
    except RuntimeError as error:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=error)
    content = log_window.assert_clean(phi)
    assert "RuntimeError at " in content and "test_no_phi_in_logs.py" in content


def test_logged_exceptions_carry_no_message(log_window):
    phi = phi_value("exc")
    log = get_logger("carepost.test")
    try:
        try:
            raise KeyError(phi)
        except KeyError as inner:
            raise LookupError(f"no contact {phi}") from inner
    except LookupError as error:
        log.exception("lookup_failed")
        log.error("lookup_failed_again", exc_info=error)
    content = log_window.assert_clean(phi)
    assert content.count('"type": "LookupError"') == 2
    assert '"caused_by": ["KeyError"]' in content


def test_sensitive_keys_are_redacted_when_code_slips(log_window):
    values = {
        "email": f"{phi_value('mail')}@example.org",
        "first_name": phi_value("first"),
        "birth_date": phi_value("dob"),
        "password": secret_value(new_password()),
        "api_key": secret_value("cp_0123456789ab_" + new_password()),
        "totp_code": secret_value("493817"),
        "session_token": secret_value(new_password()),
    }
    get_logger("carepost.test").info("oops", **values)
    content = log_window.assert_clean(*values.values())
    assert content.count('"[redacted]"') >= len(values)


def test_the_canary_scan_catches_leaks_and_ignores_lookalikes():
    assert leaked_canaries("... PhiFirstab12cd34 ...", {"PhiFirstab12cd34"}) == ["PhiFirstab12cd34"]
    code = "493817"
    assert leaked_canaries(f'{{"code": "{code}"}}', {code}) == [code]
    # Six digits inside a timestamp or a hex request id are not the code.
    for lookalike in (f"2026-01-01T10:00:00.{code}Z", f"a{code}f", f"1{code}", f"{code}9"):
        assert leaked_canaries(lookalike, {code}) == []


def test_the_end_of_run_scan_sees_the_tests_canaries(request):
    """pytest loads tests/conftest.py as its own module object; its scan must read the
    same registry that the tests fill (it once read an always-empty copy)."""
    import tests.canaries

    [plugin] = [
        module
        for module in request.config.pluginmanager.get_plugins()
        if getattr(module, "__file__", "").endswith("tests/conftest.py")
    ]
    assert plugin.PHI_CANARIES is tests.canaries.PHI_CANARIES
    assert plugin.SECRET_CANARIES is tests.canaries.SECRET_CANARIES
    assert plugin.leaked_canaries is tests.canaries.leaked_canaries
