"""The split of a message into the clear outer header and the protected entity:
the entity is exactly the body part of the message as carepost sends it in the
clear (checked against an independent construction), the outer header keeps every
envelope field, and 8-bit content is refused before signing."""

from __future__ import annotations

import copy
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from carepost.delivery.mime import Attachment, OutgoingMessage, build_message, message_bytes
from carepost.e2ee.entity import split_message
from carepost.e2ee.errors import ProtectionFailed


def _independent_entity(message: EmailMessage) -> bytes:
    """The entity made another way: a copy with only its Content-* fields, serialized."""
    entity = copy.deepcopy(message)
    for name in {key.lower() for key in entity}:
        if not name.startswith("content-"):
            del entity[name]
    return entity.as_bytes(policy=SMTP)


@pytest.mark.parametrize("attachments", [(), (Attachment("a.pdf", "application/pdf", b"%PDF"),)])
@pytest.mark.parametrize("html", [None, "<p>Résultats</p>"])
def test_entity_is_the_body_part_as_sent_in_the_clear(attachments, html):
    message = build_message(
        OutgoingMessage(
            from_address="care@clinic.example",
            from_name="Clinique Médicale",
            to_address="p@patient.example",
            to_name="Zoë Patient",
            reply_to="desk@clinic.example",
            subject="Rendez-vous confirmé " + "très long " * 12,
            html=html,
            text="Bonjour,\nvotre rendez-vous est confirmé.\n" + "x" * 300 + "\n",
            attachments=attachments,
            list_unsubscribe_url="https://clinic.example/u/abc",
            headers={"X-Carepost-Message": "m-1"},
        )
    )
    outer, entity = split_message(message)
    assert entity == _independent_entity(message)
    clear = message_bytes(message)
    assert clear.endswith(entity.partition(b"\r\n\r\n")[2])
    parsed = message_from_bytes(outer + b"\r\n", policy=SMTP)
    for name in (
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "X-Carepost-Message",
    ):
        assert parsed[name] == message[name], name
    assert parsed.get("Content-Type") is None and parsed["MIME-Version"] == "1.0"
    assert all(len(line) <= 998 for line in (outer + entity).split(b"\r\n"))


def test_eight_bit_content_is_refused_before_signing():
    message = EmailMessage(policy=SMTP)
    message["From"] = "care@clinic.example"
    message.set_content("Grüße\n", charset="utf-8", cte="8bit")
    with pytest.raises(ProtectionFailed):
        split_message(message)
