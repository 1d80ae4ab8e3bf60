"""Both report parsers take hostile input from the Internet: they never raise, and
they answer None for what is not a report of their kind."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery.arf import parse_arf
from carepost.delivery.bounces import parse_dsn
from tests.delivery.samples import SAMPLES, fill

PARSERS = {"dsn": (parse_dsn, "delivery-status"), "arf": (parse_arf, "feedback-report")}
parsers = pytest.mark.parametrize("kind", sorted(PARSERS))


@parsers
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(kind: str, data: bytes) -> None:
    PARSERS[kind][0](data)


@parsers
@given(body=st.text(max_size=3000))
def test_report_shaped_text(kind: str, body: str) -> None:
    parse, report_type = PARSERS[kind]
    data = (
        "From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: message/{report_type}\r\n\r\n" + body + "\r\n--b--\r\n"
    ).encode("utf-8", errors="surrogatepass")
    parse(data)


@parsers
@given(data=st.data())
def test_truncated_samples(kind: str, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(p.name for p in SAMPLES.glob("*.eml"))))
    whole = fill(name).data
    PARSERS[kind][0](whole[: data.draw(st.integers(0, len(whole)))])
