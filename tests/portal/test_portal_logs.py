"""No PHI, link token, one-time code, password or reply reaches the logs while a
recipient goes through the whole portal journey (DEBUG logging, as the suite runs)."""

from __future__ import annotations

from pathlib import Path

from tests.canaries import new_password, secret_value
from tests.portal.conftest import csrf_of, latest_code, sign_in_with_code
from tests.security.test_no_phi_in_logs import LogWindow


def test_the_portal_journey_logs_no_phi_nor_secrets(client, runtime, deposit, log_file: Path):
    window = LogWindow(log_file)
    token = secret_value(deposit.path.rsplit("/", 1)[1])
    sign_in_with_code(client, runtime, deposit)
    code = secret_value(latest_code(runtime, deposit.keys, deposit.item_id))
    csrf = csrf_of(client.get(deposit.path).text)
    client.get(f"{deposit.path}/attachments/0")
    reply = f"Reply from {deposit.name}"
    client.post(f"{deposit.path}/reply", data={"reply": reply, "csrf_token": csrf})
    password = new_password()
    client.post(
        f"{deposit.path}/set-password",
        data={"password": password, "confirm": password, "csrf_token": csrf},
    )
    client.post(f"{deposit.path}/verify", data={"code": "999999", "csrf_token": csrf})
    content = window.assert_clean(
        token, code, password, reply, deposit.name, deposit.subject, deposit.address
    )
    assert token not in content
