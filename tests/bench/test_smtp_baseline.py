"""The SMTP benchmark runs end to end on a small count: both loops deliver every
message to the sink in the other process, which counts them."""

from __future__ import annotations

from bench.smtp_baseline import build_messages, measure


def test_messages_are_prebuilt_to_one_domain():
    messages = build_messages(3)
    assert [recipient for recipient, _ in messages] == [
        "patient0@sink.test",
        "patient1@sink.test",
        "patient2@sink.test",
    ]
    assert all(data.endswith(b"\r\n") and b"\r\n\r\n" in data for _, data in messages)


def test_both_loops_deliver_every_message():
    bare, transport = measure(300, connections=3)
    assert bare > 0 and transport > 0
