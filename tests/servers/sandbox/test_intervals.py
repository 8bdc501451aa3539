from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opapprove.servers.sandbox.intervals import IntervalError, current_window


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def window(spec: str, at: str) -> tuple[str, str] | None:
    found = current_window(spec, ts(at))
    if found is None:
        return None
    return tuple(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M") for t in found)  # type: ignore[return-value]


def test_monthly_repetitions() -> None:
    spec = "R2/2026-01-31T00:00:00Z/P1M"
    assert window(spec, "2026-01-31T12:00") == ("2026-01-31T00:00", "2026-02-28T00:00")
    assert window(spec, "2026-03-01T00:00") == ("2026-02-28T00:00", "2026-03-31T00:00")
    assert window(spec, "2026-03-31T00:00") == ("2026-03-31T00:00", "2026-04-30T00:00")
    assert window(spec, "2026-04-30T00:00") is None  # R2: three intervals in all
    assert window(spec, "2026-01-30T00:00") is None  # before the start


def test_forever_and_start_end_and_backwards() -> None:
    assert window("R/2020-01-01T00:00:00Z/PT1H", "2026-05-05T05:30") == (
        "2026-05-05T05:00",
        "2026-05-05T06:00",
    )
    assert window("R1/2026-01-01T00:00:00Z/2026-01-08T00:00:00Z", "2026-01-10T00:00") == (
        "2026-01-08T00:00",
        "2026-01-15T00:00",
    )
    assert window("R1/P1D/2026-01-10T00:00:00Z", "2026-01-08T12:00") == (
        "2026-01-08T00:00",
        "2026-01-09T00:00",
    )


@pytest.mark.parametrize(
    "bad",
    [
        "P1M",
        "R2/2026-01-01T00:00:00Z",
        "Rx/2026-01-01T00:00:00Z/P1D",
        "R/2026-01-01T00:00:00Z/P0D",
        "R/yesterday/P1D",
    ],
)
def test_bad_intervals(bad: str) -> None:
    with pytest.raises(IntervalError):
        current_window(bad, 0)
