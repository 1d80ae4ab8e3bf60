"""Fixtures of the end-to-end encryption tests: a test PKI, throw-away gpg homes,
and a message as carepost builds it whose body holds a PHI canary."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from carepost.delivery.mime import Attachment, OutgoingMessage, build_message
from tests.canaries import phi_value
from tests.e2ee.e2ee_pki import TestCA

CLINIC = "clinic@clinic.example"
PATIENT = "bob@patient.example"


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA()


@pytest.fixture
def canary_message() -> tuple[EmailMessage, str]:
    """A message with a text and an HTML part and an attachment, its body carrying
    a registered PHI canary (the suite's log scan looks for it too)."""
    canary = phi_value("diagnosis")
    message = build_message(
        OutgoingMessage(
            from_address=CLINIC,
            from_name="Clinic",
            to_address=PATIENT,
            to_name=None,
            reply_to=None,
            subject="A new message from your clinic",
            html=f"<p>Your result: {canary}</p>",
            text=f"Your result: {canary}\n",
            attachments=(Attachment("result.txt", "text/plain", f"lab {canary}".encode()),),
        )
    )
    return message, canary


class Gpg:
    """The real gpg binary on a private, throw-away GNUPGHOME."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = {**os.environ, "GNUPGHOME": str(home)}

    def run(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        command = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""]
        return subprocess.run(
            [*command, "--status-fd", "2", *args],
            env=self.env,
            input=data,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def new_key(self, user_id: str, expiry: str = "1y") -> bytes:
        """A fresh key pair in this home; returns the armored public key."""
        made = self.run("--quick-gen-key", user_id, "default", "default", expiry)
        assert made.returncode == 0, made.stderr
        return self.run("--armor", "--export", user_id).stdout


@pytest.fixture
def make_gpg() -> Iterator[Callable[[str], Gpg]]:
    """Throw-away gpg homes, short paths (the agent's socket path has a length
    limit); each home's agent is stopped and the home removed afterwards."""
    homes: list[Gpg] = []

    def make(name: str) -> Gpg:
        gpg = Gpg(Path(tempfile.mkdtemp(prefix=f"cp-gpg-{name}-")))
        homes.append(gpg)
        return gpg

    yield make
    for gpg in homes:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=gpg.env, check=False)
        shutil.rmtree(gpg.env["GNUPGHOME"], ignore_errors=True)
