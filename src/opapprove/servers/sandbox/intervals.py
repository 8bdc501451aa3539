"""ISO 8601 repeating intervals (``R12/2025-10-14T00:03:00Z/P1M``) as grant limits use them.

Mirrors Rafiki's ``getInterval``: ``Rn/start/duration`` and ``Rn/start/end`` step forward
from the start, ``Rn/duration/end`` steps back from the end; ``R`` or ``R-1`` repeats forever.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
# Enough steps for ten years of one-second intervals, far beyond any real grant.
_MAX_STEPS = 400_000_000


class IntervalError(ValueError):
    pass


@dataclass(frozen=True)
class Duration:
    months: int
    delta: timedelta

    def add(self, moment: datetime, times: int = 1) -> datetime:
        return _add_months(moment, self.months * times) + self.delta * times


def _add_months(moment: datetime, months: int) -> datetime:
    if not months:
        return moment
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def parse_duration(text: str) -> Duration:
    m = _DURATION.match(text)
    if m is None:
        raise IntervalError(f"{text!r} is not an ISO 8601 duration like P1M or PT1H")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    months = int(g.get("years", 0)) * 12 + int(g.get("months", 0))
    delta = timedelta(
        weeks=int(g.get("weeks", 0)),
        days=int(g.get("days", 0)),
        hours=int(g.get("hours", 0)),
        minutes=int(g.get("minutes", 0)),
        seconds=float(g.get("seconds", 0)),
    )
    if months == 0 and delta <= timedelta(0):
        raise IntervalError(f"duration {text!r} is zero")
    return Duration(months, delta)


def _parse_moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise IntervalError(f"{text!r} is not an ISO 8601 date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RepeatingInterval:
    repetitions: int | None  # None: forever
    start: datetime | None
    end: datetime | None
    duration: Duration | None

    def window(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The interval containing ``at``, or None when ``at`` is outside all of them."""
        count = _MAX_STEPS if self.repetitions is None else self.repetitions + 1
        if self.start is not None:
            if at < self.start:
                return None
            if self.duration is not None:
                step = self.duration
            else:
                assert self.end is not None
                step = Duration(0, self.end - self.start)
            return _scan(self.start, step, count, at, forward=True)
        assert self.end is not None and self.duration is not None
        if at >= self.end:
            return None
        return _scan(self.end, self.duration, count, at, forward=False)


def _scan(
    anchor: datetime, step: Duration, count: int, at: datetime, *, forward: bool
) -> tuple[datetime, datetime] | None:
    # Jump close to the answer for sub-month steps, then walk.
    i = 0
    if step.months == 0:
        span = abs((at - anchor).total_seconds())
        i = max(0, int(span // step.delta.total_seconds()) - 1)
    while i < count:
        if forward:
            lo, hi = step.add(anchor, i), step.add(anchor, i + 1)
        else:
            lo, hi = step.add(anchor, -(i + 1)), step.add(anchor, -i)
        if lo <= at < hi:
            return lo, hi
        if (forward and lo > at) or (not forward and hi <= at):
            return None
        i += 1
    return None


def parse_interval(text: str) -> RepeatingInterval:
    parts = text.split("/")
    if len(parts) != 3 or not parts[0].startswith("R"):
        raise IntervalError(
            f"interval {text!r} is not an ISO 8601 repeating interval like "
            "R12/2025-01-01T00:00:00Z/P1M"
        )
    reps_text = parts[0][1:]
    if reps_text in ("", "-1"):
        repetitions = None
    elif reps_text.isdigit():
        repetitions = int(reps_text)
    else:
        raise IntervalError(f"interval {text!r} has a bad repetition count {parts[0]!r}")
    a, b = parts[1], parts[2]
    if a.startswith("P"):
        return RepeatingInterval(repetitions, None, _parse_moment(b), parse_duration(a))
    start = _parse_moment(a)
    if b.startswith("P"):
        return RepeatingInterval(repetitions, start, None, parse_duration(b))
    end = _parse_moment(b)
    if end <= start:
        raise IntervalError(f"interval {text!r} ends before it starts")
    return RepeatingInterval(repetitions, start, end, None)


def current_window(text: str, now: float) -> tuple[float, float] | None:
    window = parse_interval(text).window(datetime.fromtimestamp(now, UTC))
    return None if window is None else (window[0].timestamp(), window[1].timestamp())
