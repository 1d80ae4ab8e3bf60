"""The inbound route in the console (``/gateway/inbound-route``) and on the command
line (``carepost inbound route-set / route-show / route-delete``): set, shown, checked
with the field at fault, removed; audited; readers see it without the form."""

from __future__ import annotations

import subprocess

from carepost.gateway import replies
from tests.environment import carepost_command, child_environment


def test_console_sets_changes_and_removes_the_route(owner, sign_in, runtime, audit_trail):
    b = sign_in(owner)
    page = b.get("/gateway/inbound-route")
    assert page.status_code == 200 and 'id="no-route"' in page.text
    assert 'href="/gateway/inbound-route"' in b.get("/gateway").text
    saved = b.post(
        "/gateway/inbound-route",
        {"host": "Mail.Clinic.example", "port": "2525", "tls_mode": "verify", "enabled": "yes",
         "ca_certificate": ""},
    )  # fmt: skip
    assert saved.status_code == 200 and 'id="saved-route"' in saved.text
    with runtime.bound_session(owner.keys) as session:
        route = replies.get_route(session, owner.tenant.id)
        assert (route.host, route.port, route.tls_mode, route.enabled) == (
            "mail.clinic.example", 2525, "verify", True,
        )  # fmt: skip
    bad = b.post("/gateway/inbound-route", {"host": "bad host!", "port": "25",
                 "tls_mode": "verify", "enabled": "yes"})  # fmt: skip
    assert bad.status_code == 422 and 'id="inroute-host-error"' in bad.text
    bad_ca = b.post("/gateway/inbound-route", {"host": "mx.clinic.example", "port": "25",
                    "tls_mode": "verify", "enabled": "yes", "ca_certificate": "nope"})  # fmt: skip
    assert bad_ca.status_code == 422 and 'id="inroute-ca_certificate-error"' in bad_ca.text
    removed = b.post("/gateway/inbound-route/delete")
    assert removed.status_code == 303
    with runtime.bound_session(owner.keys) as session:
        assert replies.get_route(session, owner.tenant.id) is None
    actions = [e.action for e in audit_trail((owner.tenant, owner.keys))]
    assert "inbound_route.create" in actions and "inbound_route.delete" in actions


def test_readers_see_the_route_but_not_the_form(owner, tenant, make_person, sign_in):
    sign_in(owner).post("/gateway/inbound-route", {"host": "mx.clinic.example", "port": "25",
                        "tls_mode": "encrypt", "enabled": "yes"})  # fmt: skip
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get("/gateway/inbound-route")
    assert page.status_code == 200 and "mx.clinic.example:25" in page.text
    assert "Save inbound route" not in page.text
    assert analyst.post("/gateway/inbound-route", {"host": "x.example", "port": "25",
                        "tls_mode": "verify", "enabled": "yes"}).status_code == 403  # fmt: skip


def test_api_route_round_trip(client, make_api_key, tenant):
    headers = make_api_key(tenant)
    assert client.get("/api/v1/gateway/inbound-route", headers=headers).json() is None
    put = client.put(
        "/api/v1/gateway/inbound-route",
        json={"host": "mx.clinic.example", "port": 587, "tls_mode": "encrypt"},
        headers=headers,
    )
    assert put.status_code == 200 and put.json()["tls_mode"] == "encrypt"
    bad = client.put(
        "/api/v1/gateway/inbound-route", json={"host": "x", "tls_mode": "none"}, headers=headers
    )
    assert bad.status_code == 422 and "tls_mode" in bad.text
    assert client.delete("/api/v1/gateway/inbound-route", headers=headers).status_code == 204


def test_cli_route_set_show_delete(settings, runtime, tenant):
    environment = child_environment(settings)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            carepost_command("inbound", *args, "--tenant", tenant[0].slug),
            env=environment, capture_output=True, text=True,
        )  # fmt: skip

    set_done = run("route-set", "--host", "mx.clinic.example", "--port", "2525")
    assert set_done.returncode == 0, set_done.stderr
    shown = run("route-show")
    assert "mx.clinic.example:2525 tls=verify enabled" in shown.stdout
    assert run("route-set", "--host", "mx.clinic.example", "--tls-mode", "plain").returncode != 0
    assert run("route-delete").returncode == 0
    assert "no inbound route" in run("route-show").stdout
