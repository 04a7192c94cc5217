"""Cron expressions mean what they mean in crontab(5): Sunday is weekday 0 (and 7); seconds are optional."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from taskqueue.config import crontab

UTC = dt.UTC
MONDAY_NOON = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # 2024-01-01 was a Monday


def fires(
    expression: str,
    start: dt.datetime = MONDAY_NOON,
    count: int = 5,
    tz: str = "UTC",
) -> list[dt.datetime]:
    """The next `count` fire times after `start` (inclusive), in UTC."""
    trigger = crontab.trigger(expression, tz)
    out: list[dt.datetime] = []
    previous: dt.datetime | None = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        out.append(fire.astimezone(UTC))
        previous, now = fire, fire + dt.timedelta(microseconds=1)
    return out


def weekdays(expression: str, count: int = 7) -> list[str]:
    return [f.strftime("%a") for f in fires(expression, count=count)]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("0,7", ["Sun"]),
        ("1", ["Mon"]),
        ("6", ["Sat"]),
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("*/2", ["Sun", "Tue", "Thu", "Sat"]),
        ("1-5/2", ["Mon", "Wed", "Fri"]),
        ("mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("sun", ["Sun"]),
        ("0-7", ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]),
    ],
)
def test_weekday_numbers_follow_cron(field: str, expected: list[str]) -> None:
    seen = weekdays(f"0 9 * * {field}", count=2 * len(expected))  # two full weeks of fires
    assert set(seen) == set(expected)
    assert seen[: len(expected)] == seen[len(expected) :]  # the same days, in order, every week


def test_sunday_zero_and_seven_fire_on_the_same_days() -> None:
    assert fires("0 3 * * 0") == fires("0 3 * * 7") == fires("0 3 * * sun")
    assert fires("0 3 * * 0", count=1) == [dt.datetime(2024, 1, 7, 3, 0, tzinfo=UTC)]


def test_weekdays_one_to_five_skip_the_weekend() -> None:
    friday_evening = dt.datetime(2024, 1, 5, 18, 0, tzinfo=UTC)
    assert fires("30 8 * * 1-5", start=friday_evening, count=2) == [
        dt.datetime(2024, 1, 8, 8, 30, tzinfo=UTC),
        dt.datetime(2024, 1, 9, 8, 30, tzinfo=UTC),
    ]


def test_every_second_weekday_from_sunday() -> None:
    assert fires("0 0 * * */2", count=4) == [
        dt.datetime(2024, 1, 2, tzinfo=UTC),  # Tue
        dt.datetime(2024, 1, 4, tzinfo=UTC),  # Thu
        dt.datetime(2024, 1, 6, tzinfo=UTC),  # Sat
        dt.datetime(2024, 1, 7, tzinfo=UTC),  # Sun
    ]


def test_five_fields_fire_at_second_zero() -> None:
    assert fires("*/20 * * * *", count=3) == [
        dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        dt.datetime(2024, 1, 1, 12, 20, tzinfo=UTC),
        dt.datetime(2024, 1, 1, 12, 40, tzinfo=UTC),
    ]


def test_six_fields_start_with_seconds() -> None:
    start = dt.datetime(2024, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert fires("*/15 * * * * *", start=start, count=4) == [start.replace(second=s) for s in (15, 30, 45)] + [
        dt.datetime(2024, 1, 1, 12, 1, 0, tzinfo=UTC)
    ]
    assert fires("30 0 3 * * 1", start=start, count=2) == [
        dt.datetime(2024, 1, 8, 3, 0, 30, tzinfo=UTC),
        dt.datetime(2024, 1, 15, 3, 0, 30, tzinfo=UTC),
    ]


def test_nightly_and_monthly() -> None:
    assert fires("0 3 * * *", count=2) == [
        dt.datetime(2024, 1, 2, 3, tzinfo=UTC),
        dt.datetime(2024, 1, 3, 3, tzinfo=UTC),
    ]
    assert fires("15 6 1 */3 *", count=3) == [
        dt.datetime(2024, 4, 1, 6, 15, tzinfo=UTC),
        dt.datetime(2024, 7, 1, 6, 15, tzinfo=UTC),
        dt.datetime(2024, 10, 1, 6, 15, tzinfo=UTC),
    ]


def test_time_zone_applies_to_the_fields_across_dst() -> None:
    paris = ZoneInfo("Europe/Paris")
    before_dst = dt.datetime(2024, 3, 29, 12, 0, tzinfo=UTC)  # Friday; clocks go forward on Sunday 31 March
    got = fires("30 9 * * 1-5", start=before_dst, count=2, tz="Europe/Paris")
    assert got == [dt.datetime(2024, 4, 1, 7, 30, tzinfo=UTC), dt.datetime(2024, 4, 2, 7, 30, tzinfo=UTC)]
    assert all(f.astimezone(paris).strftime("%H:%M") == "09:30" for f in got)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 3 * *", "expected 5 fields"),
        ("1 2 3 4 5 6 7", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("0 3 * * 8", "invalid day-of-week '8'"),
        ("0 3 * * 5-1", "invalid day-of-week '5-1'"),
        ("0 3 * * */0", "invalid day-of-week '*/0'"),
        ("60 * * * *", "higher than the maximum value (59)"),
        ("0 24 * * *", "higher than the maximum value (23)"),
        ("0 0 32 * *", "higher than the maximum value (31)"),
        ("0 0 * 13 *", "higher than the maximum value (12)"),
        ("0 0 * * funday", "funday"),
    ],
)
def test_invalid_expressions_raise_value_error(expression: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        crontab.trigger(expression)
    assert reason in str(caught.value)


def test_day_of_month_or_weekday() -> None:
    # crontab(5): "0 0 13 * 5" runs on every 13th AND on every Friday, not only on Friday the 13th.
    assert fires("0 0 13 * 5", count=3) == [
        dt.datetime(2024, 1, 5, tzinfo=UTC),  # Friday
        dt.datetime(2024, 1, 12, tzinfo=UTC),  # Friday
        dt.datetime(2024, 1, 13, tzinfo=UTC),  # the 13th (a Saturday)
    ]
