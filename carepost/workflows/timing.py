"""When a Wait for Time ends: pure functions of the step, the contact's values and now.

Time windows are wall-clock times in an IANA zone (zoneinfo), so "Thursdays
12:00-14:00 America/Chicago" means noon Chicago time on either side of a DST
change. Two edges are decided explicitly:

* a wall time that does not exist (the spring-forward gap) opens the window at the
  first instant after the gap (the clocks jump over the missing hour);
* a wall time that happens twice (the fall-back hour) opens at its first occurrence.

A window whose every matching day is inside a gap is skipped to the next matching
day; a window that can never open (end not after start, no day to match) is a
design-time error (:func:`window_problem`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carepost.workflows.steps import UntilField, UntilWindow

# Every day-of-week/day-of-month combination recurs within 28 years; a search longer
# than this finds nothing more.
MAX_SEARCH_DAYS = 366 * 29


class WindowNeverOpens(ValueError):
    """No instant satisfies the window."""


def zone(name: str | None, fallback: str) -> ZoneInfo:
    """The contact's zone when it names a real one, else the step's."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(fallback)


def window_problem(window: UntilWindow) -> str | None:
    """Why a window can never open, or None."""
    if window.end <= window.start:
        return "the window's end must be after its start (same day)"
    if window.days_of_week is not None and not window.days_of_week:
        return "choose at least one day of the week (or none to allow every day)"
    if window.days_of_month is not None and not window.days_of_month:
        return "choose at least one day of the month (or none to allow every day)"
    return None


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def first_instant_at(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first UTC instant whose wall-clock time in ``tz`` on ``day`` is ``wall`` or
    later (the gap's end when ``wall`` falls in a spring-forward gap)."""
    wanted = datetime.combine(day, wall)
    first = wanted.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(first, tz) == wanted:
        return first  # exists (fold=0 is the first of two occurrences)
    # In a gap: between the instants the two offsets give, the wall clock jumps over
    # ``wanted``; find the jump by bisection (to the second).
    low = wanted.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _wall(middle, tz) >= wanted:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if _wall(high.replace(microsecond=0), tz) >= wanted else high


def _day_matches(day: date, window: UntilWindow) -> bool:
    if window.days_of_week is not None and day.weekday() not in window.days_of_week:
        return False
    return window.days_of_month is None or day.day in window.days_of_month


def in_window(instant: datetime, window: UntilWindow, tz: ZoneInfo) -> bool:
    local = instant.astimezone(tz)
    return _day_matches(local.date(), window) and window.start <= local.time() < window.end


def next_window_open(now: datetime, window: UntilWindow, tz: ZoneInfo) -> datetime:
    """``now`` when it is inside the window, else the next instant the window opens."""
    problem = window_problem(window)
    if problem:
        raise WindowNeverOpens(problem)
    today = now.astimezone(tz).date()
    for offset in range(MAX_SEARCH_DAYS):
        day = today + timedelta(days=offset)
        if not _day_matches(day, window):
            continue
        opens = first_instant_at(day, window.start, tz)
        closes = first_instant_at(day, window.end, tz)
        if closes <= now or opens >= closes:
            continue
        if opens.astimezone(tz).date() != day:
            continue
        return max(opens, now)
    raise WindowNeverOpens("no matching day within 29 years")


def field_wake_at(value: object, rule: UntilField, tz: ZoneInfo) -> datetime | None:
    """The instant ``offset_minutes`` from a contact's date or datetime value, or None
    when the contact has no usable value."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if "T" in value or " " in value:
            parsed = datetime.fromisoformat(value)
            base = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
        else:
            day = date.fromisoformat(value)
            base = first_instant_at(day, rule.at_time, tz)
    except ValueError:
        return None
    return base.astimezone(UTC) + timedelta(minutes=rule.offset_minutes)
