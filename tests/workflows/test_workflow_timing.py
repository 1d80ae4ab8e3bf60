"""Wait for Time computations: windows in a zone across DST, field offsets (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.workflows.steps import UntilField, UntilWindow
from carepost.workflows.timing import (
    WindowNeverOpens,
    field_wake_at,
    first_instant_at,
    in_window,
    next_window_open,
    window_problem,
)

CHICAGO = ZoneInfo("America/Chicago")


def _window(**values) -> UntilWindow:
    return UntilWindow.model_validate({"kind": "window", **values})


def test_thursday_noon_chicago_is_17_utc_in_summer_and_18_in_winter():
    window = _window(days_of_week=[3], start="12:00", end="14:00", timezone="America/Chicago")
    summer = next_window_open(datetime(2026, 7, 6, tzinfo=UTC), window, CHICAGO)
    winter = next_window_open(datetime(2026, 12, 7, tzinfo=UTC), window, CHICAGO)
    assert summer == datetime(2026, 7, 9, 17, 0, tzinfo=UTC)
    assert winter == datetime(2026, 12, 10, 18, 0, tzinfo=UTC)


def test_inside_the_window_it_opens_now():
    window = _window(start="09:00", end="17:00", timezone="America/Chicago")
    now = datetime(2026, 7, 6, 15, 30, tzinfo=UTC)  # 10:30 in Chicago
    assert next_window_open(now, window, CHICAGO) == now


def test_a_start_in_the_spring_forward_gap_opens_when_the_clocks_jump():
    window = _window(days_of_week=[6], start="02:30", end="04:00", timezone="America/Chicago")
    opens = next_window_open(datetime(2026, 3, 7, 12, tzinfo=UTC), window, CHICAGO)
    assert opens == datetime(2026, 3, 8, 8, 0, tzinfo=UTC)  # 03:00 CDT, the first instant
    assert opens.astimezone(CHICAGO).time() == time(3, 0)


def test_a_window_entirely_inside_the_gap_waits_for_the_next_matching_day():
    window = _window(days_of_week=[6], start="02:10", end="02:50", timezone="America/Chicago")
    opens = next_window_open(datetime(2026, 3, 7, 12, tzinfo=UTC), window, CHICAGO)
    assert opens.astimezone(CHICAGO).date() == date(2026, 3, 15)
    assert opens.astimezone(CHICAGO).time() == time(2, 10)


def test_a_repeated_wall_time_opens_at_its_first_occurrence():
    opens = first_instant_at(date(2026, 11, 1), time(1, 30), CHICAGO)
    assert opens == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 CDT, not CST


def test_windows_that_can_never_open_are_named():
    assert window_problem(_window(start="14:00", end="12:00")) is not None
    assert window_problem(_window(days_of_week=[])) is not None
    with pytest.raises(WindowNeverOpens):
        next_window_open(datetime(2026, 1, 1, tzinfo=UTC), _window(days_of_month=[]), CHICAGO)


def test_day_of_month_and_day_of_week_both_have_to_match():
    window = _window(days_of_week=[4], days_of_month=[13], start="09:00", end="10:00")
    opens = next_window_open(datetime(2026, 1, 1, tzinfo=UTC), window, ZoneInfo("UTC"))
    assert opens == datetime(2026, 2, 13, 9, 0, tzinfo=UTC)  # Friday the 13th


def test_relative_to_a_date_field_in_the_contacts_zone():
    rule = UntilField(kind="field", field="appointment", offset_minutes=-3 * 24 * 60)
    wake = field_wake_at("2026-03-12", rule, CHICAGO)  # 09:00 CDT on the 12th
    assert wake == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # exact 72 hours before
    assert field_wake_at("not a date", rule, CHICAGO) is None
    assert field_wake_at(None, rule, CHICAGO) is None
    assert field_wake_at("2026-03-12T10:00:00+00:00", rule, CHICAGO) == datetime(
        2026, 3, 9, 10, 0, tzinfo=UTC
    )


ZONES = ["America/Chicago", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@settings(max_examples=150)
@given(
    now=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
    zone_name=st.sampled_from(ZONES),
    days=st.one_of(st.none(), st.sets(st.integers(0, 6), min_size=1).map(sorted)),
    start_minute=st.integers(0, 23 * 60),
    length=st.integers(1, 6 * 60),
)
def test_the_opening_is_inside_the_window_and_nothing_earlier_is(
    now, zone_name, days, start_minute, length
):
    end_minute = min(start_minute + length, 24 * 60 - 1)
    if end_minute <= start_minute:
        return
    window = _window(
        days_of_week=days,
        start=time(start_minute // 60, start_minute % 60),
        end=time(end_minute // 60, end_minute % 60),
        timezone=zone_name,
    )
    tz = ZoneInfo(zone_name)
    opens = next_window_open(now, window, tz)
    assert opens >= now
    assert in_window(opens, window, tz)
    # No instant between now and the opening is inside the window (checked each minute).
    probe = now
    step = timedelta(minutes=1) if opens - now < timedelta(hours=6) else timedelta(minutes=10)
    while probe < opens - timedelta(seconds=1):
        assert not in_window(probe, window, tz) or probe == opens
        probe += step
