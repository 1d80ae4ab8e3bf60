"""End to end: a journey sends its first email over real SMTP (the delivery worker
to an aiosmtpd receiver on loopback), the contact opens it through the tracking
pixel URL found in the delivered HTML (an HTTP request to the app), and the journey
takes its "opened" path, whose email is delivered too."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from carepost.messages.delivery import deliver_due_messages
from carepost.workflows.models import RunStatus
from tests.messages.smtp_sink import SmtpSink, delivering_to

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Safari/605.1.15"
)
PIXEL = re.compile(r"https?://[^/\"']+(/t/o/[^\"'\s>]+)")


def _received(sink: SmtpSink, message_id: str):
    return [r for r in sink.received if r.carepost_id == message_id]


def test_a_journey_over_smtp_branches_on_the_pixel_open(journey, client):
    template = str(journey.template_id)
    workflow = journey.workflow(
        [
            {"id": "welcome", "type": "send_email", "template_id": template, "next": "opened"},
            {
                "id": "opened",
                "type": "wait_for_event",
                "event": {"kind": "opened", "step": "welcome"},
                "timeout": {"days": 3},
                "next": "thanks",
                "timeout_next": "reminder",
            },
            {"id": "thanks", "type": "send_email", "template_id": template},
            {"id": "reminder", "type": "send_email", "template_id": template},
        ]
    )
    person = journey.contact(email=f"e2e-{uuid.uuid4().hex[:8]}@patients.example")
    sink = SmtpSink().start()
    try:
        delivering = delivering_to(journey.runtime, sink)
        start = datetime.now(UTC)
        journey.enroll(workflow, [person], now=start)
        journey.advance(start)
        run = journey.run(workflow, person)
        assert run.status == RunStatus.WAITING
        welcome_id = run.sent["welcome"]

        deliver_due_messages(delivering, budget_seconds=30)
        [delivered] = _received(sink, welcome_id)
        html = delivered.message.get_body(("html",)).get_content()
        match = PIXEL.search(html)
        assert match is not None, "no tracking pixel in the delivered HTML"

        # The contact's mail client loads the pixel a while after delivery.
        opened = client.get(match.group(1), headers={"User-Agent": BROWSER})
        assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
        assert journey.run(workflow, person).wake_reason == "event"

        journey.advance(datetime.now(UTC))
        run = journey.run(workflow, person)
        assert run.status == RunStatus.COMPLETED
        assert [step for step, _ in journey.history(workflow, person)] == [
            "welcome",
            "opened",
            "thanks",
        ]
        assert journey.history(workflow, person)[1] == ("opened", "event")
        deliver_due_messages(delivering, budget_seconds=30)
        assert len(_received(sink, run.sent["thanks"])) == 1
        assert "reminder" not in run.sent
        assert len(_received(sink, welcome_id)) == 1  # never sent twice
    finally:
        sink.stop()
