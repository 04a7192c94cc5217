"""Periodic schedules: APScheduler's triggers are the clock (cron, intervals, time zones); Redis decides.

Every runner computes the same fire times (intervals are anchored at the Unix epoch, so they do not
depend on when a runner started) and tries each fire through one Lua script that accepts a fire time
only if it is later than the schedule's last one. However many runners join or leave, each fire time
enqueues once, under the deterministic task id `<schedule>@<fire time>`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from taskqueue._loop import raise_if_cancelled, ride_out
from taskqueue.config import Config, ScheduleConfig, crontab
from taskqueue.errors import PayloadTooLarge
from taskqueue.store.broker import Broker

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger("taskqueue.scheduler")

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TINY = dt.timedelta(microseconds=1)
MAX_SLEEP_S = 30.0  # wake up now and then anyway: clock changes, and a bounded wait is easier to stop
MAX_MISSED_SCAN = 100_000  # fire times walked when looking for the latest missed one

T = TypeVar("T")


def trigger_of(schedule: ScheduleConfig) -> BaseTrigger:
    """APScheduler is imported here, the first time a schedule needs its trigger: a runner without
    schedules never loads it."""
    if schedule.cron is not None:
        return crontab.trigger(schedule.cron, schedule.timezone)
    from apscheduler.triggers.interval import IntervalTrigger

    assert schedule.every_s is not None
    return IntervalTrigger(seconds=schedule.every_s, start_date=EPOCH, timezone=schedule.timezone)


def _ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass
class _Entry:
    config: ScheduleConfig
    trigger: BaseTrigger
    queue: str
    next: dt.datetime | None = None

    def after(self, moment: dt.datetime) -> dt.datetime | None:
        found: dt.datetime | None = self.trigger.get_next_fire_time(None, moment + TINY)
        return found


class Schedules:
    def __init__(self, broker: Broker, config: Config) -> None:
        self.broker = broker
        self.config = config
        self.entries = [
            _Entry(s, trigger_of(s), s.queue or config.queue_of(s.task)) for s in config.schedules if s.enabled
        ]
        self._jitters: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Fire schedules until cancelled."""
        if not self.entries:
            return
        await self._start()
        while True:
            raise_if_cancelled()
            now = dt.datetime.now(dt.UTC)
            pending = [e.next for e in self.entries if e.next is not None]
            if not pending:
                return
            wait = (min(pending) - now).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_SLEEP_S))
                continue
            for entry in self.entries:
                if entry.next is not None and entry.next <= now:
                    await self._due(entry, entry.next, now)

    async def _start(self) -> None:
        """Work out each schedule's next fire. Of the fire times missed while no runner ran (a schedule seen
        for the first time has none), those older than misfire_grace fire once (catch_up) or are skipped;
        the latest one within misfire_grace fires now, as a late regular fire."""
        now = dt.datetime.now(dt.UTC)
        state = await _retry_forever(self.broker.schedule_state)
        for entry in self.entries:
            entry.next = entry.after(now - TINY)
            last_ms = state.get(f"{entry.config.name}:last")
            if last_ms is None:
                continue
            last = dt.datetime.fromtimestamp(last_ms / 1000, dt.UTC)
            edge = now - dt.timedelta(seconds=entry.config.misfire_grace_s)
            old = self._latest_before(entry, last, edge)
            recent = self._latest_before(entry, max(last, edge - TINY), now)
            if old is not None and entry.config.catch_up:
                log.info("schedule %s: catching up the fire missed at %s", entry.config.name, old.isoformat())
                await self._fire(entry, old)
            elif old is not None:
                log.info("schedule %s: skipping fires missed while down (catch_up: false)", entry.config.name)
                await _retry_forever(functools.partial(self._skip, entry, old))
            if recent is not None:
                await self._fire(entry, recent)

    def _latest_before(self, entry: _Entry, last: dt.datetime, limit: dt.datetime) -> dt.datetime | None:
        """The latest fire time after `last` and before `limit`, if any."""
        found = None
        moment = entry.after(last)
        for _ in range(MAX_MISSED_SCAN):
            if moment is None or moment >= limit:
                break
            found = moment
            moment = entry.after(moment)
        return found

    async def _due(self, entry: _Entry, fire_at: dt.datetime, now: dt.datetime) -> None:
        entry.next = entry.after(max(fire_at, now - dt.timedelta(seconds=entry.config.misfire_grace_s)))
        late_s = (now - fire_at).total_seconds()
        if late_s > entry.config.misfire_grace_s:
            log.warning("schedule %s: skipped the fire of %s, %.1fs late", entry.config.name, fire_at, late_s)
            await _retry_forever(lambda: self._skip(entry, fire_at))
            return
        if entry.config.jitter_s > 0:
            job = asyncio.create_task(self._fire_later(entry, fire_at, random.uniform(0, entry.config.jitter_s)))
            self._jitters.add(job)
            job.add_done_callback(self._jitters.discard)
            return
        await self._fire(entry, fire_at)

    async def _fire_later(self, entry: _Entry, fire_at: dt.datetime, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._fire(entry, fire_at)

    async def _fire(self, entry: _Entry, fire_at: dt.datetime) -> None:
        cfg = entry.config
        stamp = fire_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        producer, task_id = self.broker.producer, f"{cfg.name}@{stamp}"
        hold: tuple[object, ...] = ()
        try:
            unique = producer.lock_of(cfg.task, cfg.args, cfg.kwargs)  # a unique task's fire may be a duplicate
            lock = unique[0] if unique else None
            _, message = producer.message(cfg.task, cfg.args, cfg.kwargs, task_id=task_id, unique=lock)
            if unique:
                hold = producer.hold(entry.queue, task_id, *unique)
        except (PayloadTooLarge, ValueError) as exc:
            log.error("schedule %s cannot fire: %s", cfg.name, exc, extra={"task": cfg.task, "queue": entry.queue})
            message = None  # recorded as skipped, so the schedule moves on
        following = entry.after(fire_at)
        next_ms = _ms(following) if following else -1
        fired = await _retry_forever(
            lambda: self.broker.fire(cfg.name, entry.queue, _ms(fire_at), next_ms, message, hold, (task_id, cfg.task))
        )
        if fired and message is not None:
            log.info("schedule %s fired (%s)", cfg.name, stamp, extra={"task": cfg.task, "queue": entry.queue})

    async def _skip(self, entry: _Entry, fire_at: dt.datetime) -> bool:
        following = entry.after(fire_at)
        return await self.broker.fire(
            entry.config.name, entry.queue, _ms(fire_at), _ms(following) if following else -1, None
        )


async def _retry_forever(call: Callable[[], Awaitable[T]]) -> T:
    """The schedule's state lives in Redis, so a fire waits for it."""
    return await ride_out(call, "firing a schedule")


def describe(config: Config, state: dict[str, int], counts: dict[str, int]) -> list[dict[str, object]]:
    """Each schedule's trigger, last fire and next fire, for `status` and the HTTP API."""
    out: list[dict[str, object]] = []
    now = dt.datetime.now(dt.UTC)
    for s in config.schedules:
        upcoming = trigger_of(s).get_next_fire_time(None, now) if s.enabled else None
        last = state.get(f"{s.name}:fired")
        out.append(
            {
                "name": s.name,
                "task": s.task,
                "trigger": f"cron {s.cron}" if s.cron else f"every {s.every_s:g}s",
                "enabled": s.enabled,
                "last_fire": dt.datetime.fromtimestamp(last / 1000, dt.UTC).isoformat() if last else None,
                "next_fire": upcoming.astimezone(dt.UTC).isoformat() if upcoming else None,
                "fired": counts.get(f"schedule_fired:{s.name}", 0),
                "skipped": counts.get(f"schedule_skipped:{s.name}", 0),
            }
        )
    return out
