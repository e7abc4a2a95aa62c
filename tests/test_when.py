"""Resolving the caller's words for a time, in the business time zone."""

from datetime import date, datetime, time

import pytest

from tests.conftest import SUNDAY_MORNING, TZ
from tools.domain.when import resolve_when
from tools.errors import ToolError

# SUNDAY_MORNING is Sunday 2026-11-22 10:00.


@pytest.mark.parametrize(
    ("words", "day", "exact", "earliest", "latest"),
    [
        ("this Friday at 2pm", date(2026, 11, 27), time(14, 0), None, None),
        ("Friday at 2:30 p.m.", date(2026, 11, 27), time(14, 30), None, None),
        ("tomorrow morning", date(2026, 11, 23), None, time(8, 0), time(12, 0)),
        ("tomorrow at 3", date(2026, 11, 23), time(15, 0), None, None),
        ("next Tuesday", date(2026, 11, 24), None, None, None),
        ("June 20th", date(2027, 6, 20), None, None, None),
        ("december 3rd at 11am", date(2026, 12, 3), time(11, 0), None, None),
        (
            "the day after tomorrow in the afternoon",
            date(2026, 11, 24),
            None,
            time(12, 0),
            time(17, 0),
        ),
        ("Saturday at noon", date(2026, 11, 28), time(12, 0), None, None),
        ("Wednesday after 4", date(2026, 11, 25), None, time(16, 0), None),
        ("thursday before noon", date(2026, 11, 26), None, None, time(12, 0)),
        ("on Monday at half past ten", date(2026, 11, 23), time(10, 30), None, None),
        ("monday at ten thirty am", date(2026, 11, 23), time(10, 30), None, None),
    ],
)
def test_resolves_common_phrasings(words, day, exact, earliest, latest):
    when = resolve_when(words, SUNDAY_MORNING)
    assert when.day == day
    assert when.exact == exact
    assert when.earliest == earliest
    assert when.latest == latest


def test_next_weekday_within_this_week_means_the_following_week():
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
    assert resolve_when("next Tuesday", monday).day == date(2026, 12, 1)
    assert resolve_when("this Tuesday", monday).day == date(2026, 11, 24)
    assert resolve_when("Tuesday", monday).day == date(2026, 11, 24)


def test_open_requests_search_forward():
    when = resolve_when("as soon as possible", SUNDAY_MORNING)
    assert when.any_day and when.day == date(2026, 11, 22)
    week = resolve_when("sometime next week", SUNDAY_MORNING)
    assert week.day == date(2026, 11, 23) and week.days == 7


def test_time_only_means_today_or_tomorrow():
    assert resolve_when("at 3pm", SUNDAY_MORNING).day == date(2026, 11, 22)
    assert resolve_when("at 9am", SUNDAY_MORNING).day == date(2026, 11, 23)


def test_gibberish_is_a_question_for_the_caller():
    with pytest.raises(ToolError, match="What day and time"):
        resolve_when("the thing with the stuff", SUNDAY_MORNING)


def test_dst_change_keeps_local_wall_time():
    # US clocks spring forward on Sunday 2027-03-14.
    friday = datetime(2027, 3, 12, 10, 0, tzinfo=TZ)
    when = resolve_when("Monday at 9am", friday)
    target = when.target(TZ)
    assert target is not None
    assert target.utcoffset().total_seconds() == -4 * 3600  # EDT after the change
    assert friday.utcoffset().total_seconds() == -5 * 3600
    assert target.hour == 9
