"""Appointment slots: which start times are free for a service, and which few to offer.

Pure: the store supplies who can do the service and what is already booked
(tools.store.appointments.find_slots); this module decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from tools.domain.business import Business, Service
from tools.domain.when import When

LEAD_TIME = timedelta(minutes=30)  # no bookings closer than this to now
MAX_OFFERED = 3


@dataclass(frozen=True)
class Slot:
    """A bookable start time (aware, business zone) with the staff member who would take it."""

    starts_at: datetime
    staff_id: int | None
    staff_name: str


@dataclass(frozen=True)
class Busy:
    """A booked appointment's time, and its staff member (None: any staff)."""

    staff_id: int | None
    starts_at: datetime
    ends_at: datetime


def search_days(when: When) -> int:
    """How many days from ``when.day`` a search looks at (at least a week for "any day")."""
    return when.days if not when.any_day else max(when.days, 7)


def search_window(business: Business, when: When, days: int) -> tuple[datetime, datetime]:
    """The span of time (aware) that a search of ``days`` days from ``when.day`` covers."""
    start = datetime.combine(when.day, time(0), business.tz)
    return start, datetime.combine(when.day + timedelta(days=days), time(0), business.tz)


def free_slots(
    business: Business,
    service: Service,
    when: When,
    now: datetime,
    staff: Sequence[tuple[int | None, str]],
    busy: Sequence[Busy],
    *,
    days: int,
    limit: int = MAX_OFFERED,
    lead: timedelta = LEAD_TIME,
) -> list[Slot]:
    """Free slots for ``service`` within ``days`` days of ``when``, nearest to the request first
    (an exact time asked for), else spread over the earliest day(s) with room. ``staff`` are the
    qualified staff ((None, "") when nobody is assigned the service); ``busy`` the bookings;
    nothing starts sooner than ``lead`` after ``now``."""
    tz = business.tz
    duration = timedelta(minutes=service.duration_minutes)
    step = timedelta(minutes=business.slot_minutes)
    earliest_start = now + lead
    horizon = now.date() + timedelta(days=business.booking_horizon_days)
    candidates: list[Slot] = []
    target = when.target(tz)
    for offset in range(days):
        day: date = when.day + timedelta(days=offset)
        if day > horizon:
            break
        for opens, closes in business.opening_on(day):
            start = datetime.combine(day, opens, tz)
            close = datetime.combine(day, closes, tz)
            while start + duration <= close:
                local_time = start.time()
                within = (when.earliest is None or local_time >= when.earliest) and (
                    when.latest is None or local_time < when.latest
                )
                if within and start >= earliest_start:
                    for staff_id, staff_name in staff:
                        clash = any(
                            (staff_id is None or b.staff_id == staff_id or b.staff_id is None)
                            and b.starts_at < start + duration
                            and b.ends_at > start
                            for b in busy
                        )
                        if not clash:
                            candidates.append(Slot(start, staff_id, staff_name))
                            break
                start += step
        if candidates and target is None and not when.any_day:
            break
    if target is not None:
        candidates.sort(key=lambda s: (abs((s.starts_at - target).total_seconds()), s.starts_at))
        return candidates[:limit]
    candidates.sort(key=lambda s: s.starts_at)
    return spread(candidates, limit, timedelta(minutes=max(60, service.duration_minutes)))


def spread(slots: list[Slot], limit: int, gap: timedelta) -> list[Slot]:
    """Up to ``limit`` slots, earliest first, as far apart as the day allows: a caller hears real
    choices ("nine, ten thirty or eleven") rather than three neighbouring quarter hours."""
    chosen: list[Slot] = []
    for spacing in (gap, gap / 2, timedelta(0)):
        for slot in slots:
            if len(chosen) == limit:
                break
            if slot not in chosen and all(
                abs(slot.starts_at - c.starts_at) >= spacing for c in chosen
            ):
                chosen.append(slot)
    return sorted(chosen, key=lambda s: s.starts_at)
