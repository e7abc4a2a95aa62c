"""When the business may place outbound calls: a daily window in its own time zone.

``business.calling_hours_start`` / ``calling_hours_end`` ("HH:MM", start before end, the same
every day of the week) in ``business.timezone``; never on the business's holidays (a reminder on
Christmas Day is not welcome, and nobody is in to take the reply). Pure and DST-safe: instants
are aware datetimes, local times are read with :mod:`zoneinfo`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tools.domain.validation import is_timezone

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

#: Days looked ahead for an open day before giving up (a year of holidays is a config mistake).
_SEARCH_DAYS = 400


class CallingHoursError(ValueError):
    """Calling hours that cannot be used; the message names the field and what was given."""


def parse_hhmm(field_name: str, text: str) -> time:
    """``"09:30"`` as a time; :class:`CallingHoursError` naming ``field_name`` otherwise."""
    match = _HHMM.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise CallingHoursError(f"{field_name} must be a time as HH:MM (24-hour), not {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class CallingHours:
    """The daily window ``[start, end)`` in ``zone``, closed on ``closed_days`` (local dates)."""

    start: time
    end: time
    zone: ZoneInfo
    closed_days: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def parse(
        cls, start: str, end: str, timezone: str, closed_days: Iterable[date] = ()
    ) -> CallingHours:
        """From the stored strings; :class:`CallingHoursError` for a bad time, a start not
        before the end, or an unknown time zone."""
        opens = parse_hhmm("calling_hours_start", start)
        closes = parse_hhmm("calling_hours_end", end)
        if opens >= closes:
            raise CallingHoursError(
                f"calling_hours_start ({start}) must be before calling_hours_end ({end})"
            )
        if not is_timezone(timezone):
            raise CallingHoursError(f"timezone must be an IANA zone name, not {timezone!r}")
        return cls(opens, closes, ZoneInfo(timezone), frozenset(closed_days))

    def contains(self, instant: datetime) -> bool:
        """Whether a call may be placed at ``instant`` (aware)."""
        local = _aware(instant).astimezone(self.zone)
        if local.date() in self.closed_days:
            return False
        return self.start <= local.time().replace(tzinfo=None) < self.end

    def next_open(self, instant: datetime) -> datetime:
        """The first instant at or after ``instant`` inside calling hours, in UTC."""
        instant = _aware(instant).astimezone(UTC)
        if self.contains(instant):
            return instant
        day = instant.astimezone(self.zone).date()
        for offset in range(_SEARCH_DAYS):
            candidate_day = day + timedelta(days=offset)
            if candidate_day in self.closed_days:
                continue
            opens = self._local_instant(candidate_day, self.start)
            closes = self._local_instant(candidate_day, self.end)
            if opens >= instant:
                return opens
            if instant < closes:  # inside today's window (contains() said no: cannot happen)
                return instant
        raise CallingHoursError(f"no open calling day within {_SEARCH_DAYS} days of {instant}")

    def _local_instant(self, day: date, clock: time) -> datetime:
        """``clock`` on ``day`` in the zone, as a UTC instant. A wall time skipped by a DST jump
        becomes the instant after the jump (02:30 on a spring-forward night -> 03:30 local)."""
        naive = datetime.combine(day, clock)
        local = naive.replace(tzinfo=self.zone)
        # Round-trip through UTC: a non-existent local time normalises forward.
        return local.astimezone(UTC)


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"an aware datetime is needed, not naive {instant.isoformat()}")
    return instant
