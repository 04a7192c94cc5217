"""Fire-time arithmetic of periodic schedules (no Redis: pure trigger maths)."""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType

from taskqueue.config import ScheduleConfig
from taskqueue.runner.schedules import trigger_of


def _schedule(cron: str | None = None, every_s: float | None = None, timezone: str = "UTC") -> ScheduleConfig:
    return ScheduleConfig("s", "t", cron, every_s, (), MappingProxyType({}), None, timezone, 60.0, False, 0.0, True)


def test_intervals_are_anchored_at_the_epoch_so_every_runner_agrees() -> None:
    trigger = trigger_of(_schedule(every_s=90))
    moment = dt.datetime(2026, 11, 28, 10, 0, 1, tzinfo=dt.UTC)
    fire = trigger.get_next_fire_time(None, moment)
    assert fire.timestamp() % 90 == 0
    assert fire == trigger.get_next_fire_time(None, moment + dt.timedelta(seconds=30))  # whenever asked


def test_cron_follows_its_time_zone_across_daylight_saving() -> None:
    trigger = trigger_of(_schedule(cron="0 3 * * *", timezone="Europe/Paris"))
    winter = trigger.get_next_fire_time(None, dt.datetime(2026, 11, 28, tzinfo=dt.UTC))
    summer = trigger.get_next_fire_time(None, dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    assert winter.astimezone(dt.UTC).hour == 2  # 03:00 CET = 02:00 UTC
    assert summer.astimezone(dt.UTC).hour == 1  # 03:00 CEST = 01:00 UTC


def test_six_field_cron_has_seconds_first() -> None:
    trigger = trigger_of(_schedule(cron="*/15 * * * * *"))
    fire = trigger.get_next_fire_time(None, dt.datetime(2026, 11, 28, 10, 0, 1, tzinfo=dt.UTC))
    assert fire == dt.datetime(2026, 11, 28, 10, 0, 15, tzinfo=dt.UTC)
