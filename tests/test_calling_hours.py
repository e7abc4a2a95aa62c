"""tools.domain.calling_hours: the daily window in the business zone, holidays closed, DST-safe."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from tools.domain.calling_hours import CallingHours, CallingHoursError

NY = ZoneInfo("America/New_York")
HOURS = CallingHours.parse("09:00", "20:00", "America/New_York", [date(2026, 12, 25)])


def ny(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        (ny(2026, 12, 3, 8, 59), False),
        (ny(2026, 12, 3, 9, 0), True),
        (ny(2026, 12, 3, 19, 59), True),
        (ny(2026, 12, 3, 20, 0), False),  # the end is exclusive
        (ny(2026, 12, 3, 21, 0), False),
        (ny(2026, 12, 25, 12, 0), False),  # a holiday
        # 14:30 UTC is 09:30 in New York: the zone, not UTC, decides.
        (datetime(2026, 12, 3, 14, 30, tzinfo=UTC), True),
        (datetime(2026, 12, 3, 13, 30, tzinfo=UTC), False),
    ],
)
def test_contains(instant: datetime, inside: bool) -> None:
    assert HOURS.contains(instant) is inside


@pytest.mark.parametrize(
    ("instant", "opens"),
    [
        (ny(2026, 12, 3, 10, 15), ny(2026, 12, 3, 10, 15)),  # inside: unchanged
        (ny(2026, 12, 3, 7, 0), ny(2026, 12, 3, 9, 0)),  # early: this morning
        (ny(2026, 12, 3, 21, 0), ny(2026, 12, 4, 9, 0)),  # late: next morning
        (ny(2026, 12, 24, 20, 30), ny(2026, 12, 26, 9, 0)),  # skips Christmas Day
        # DST: the night clocks go forward (8 March 2026) and back (1 November 2026).
        (ny(2026, 3, 7, 22, 0), ny(2026, 3, 8, 9, 0)),
        (ny(2026, 10, 31, 22, 0), ny(2026, 11, 1, 9, 0)),
    ],
)
def test_next_open(instant: datetime, opens: datetime) -> None:
    found = HOURS.next_open(instant)
    assert found == opens
    assert found.tzinfo is UTC
    assert HOURS.contains(found)


def test_dst_offsets_are_the_local_ones() -> None:
    # 09:00 New York is 14:00 UTC in winter and 13:00 UTC in summer.
    assert HOURS.next_open(ny(2026, 3, 7, 22, 0)).hour == 13
    assert HOURS.next_open(ny(2026, 11, 1, 3, 0)).hour == 14


def test_a_window_opening_in_the_skipped_hour_opens_after_the_jump() -> None:
    night = CallingHours.parse("02:30", "05:00", "America/New_York")
    # 02:30 does not exist on 8 March 2026 in New York: 03:30 EDT (07:30 UTC) is next.
    found = night.next_open(ny(2026, 3, 8, 1, 0))
    assert found == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert night.contains(found)


@pytest.mark.parametrize(
    ("start", "end", "zone", "message"),
    [
        ("9:00", "20:00", "America/New_York", "calling_hours_start must be a time as HH:MM"),
        ("09:00", "24:00", "America/New_York", "calling_hours_end must be a time as HH:MM"),
        ("20:00", "09:00", "America/New_York", "must be before calling_hours_end"),
        ("09:00", "09:00", "America/New_York", "must be before calling_hours_end"),
        ("09:00", "20:00", "Mars/Olympus", "IANA zone"),
    ],
)
def test_bad_hours_are_named(start: str, end: str, zone: str, message: str) -> None:
    with pytest.raises(CallingHoursError, match=message):
        CallingHours.parse(start, end, zone)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        HOURS.contains(datetime(2026, 12, 3, 10, 0))
