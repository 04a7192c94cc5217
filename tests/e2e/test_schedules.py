"""Periodic schedules through the built PEX: one fire per fire time across runners that come and go,
cron precision, and catch-up after downtime."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import time
from collections import Counter

import msgpack

from tests.conftest import wait_for
from tests.e2e.harness import RunnerFactory, store


def _schedules(entries: str) -> str:
    return f"schedules:\n{entries}"


def _fires(redis_url: str) -> list[tuple[str, float]]:
    """(task id, start time) of every fire_log run, in order."""
    found = []
    for raw in store(redis_url).lrange("test:fires", 0, -1):
        task_id, started = raw.decode().split("|")
        found.append((task_id, float(started)))
    return found


def _fire_time(task_id: str) -> float:
    """`<schedule>@2026-11-28T02:10:17.000Z` → epoch seconds of the fire."""
    stamp = task_id.split("@", 1)[1]
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def test_runners_joining_and_leaving_fire_each_second_exactly_once(make_runner: RunnerFactory, redis_url: str) -> None:
    every = "  tick: {task: fire_log, every: 1s}\n"
    first = make_runner(redis_url, extra=_schedules(every), workers=1).start(expect_workers=1)
    second = make_runner(redis_url, extra=_schedules(every), workers=1).start(expect_workers=1)
    wait_for(lambda: len(_fires(redis_url)) >= 4, timeout=15, what="4 fires with two runners")
    third = make_runner(redis_url, extra=_schedules(every), workers=1).start(expect_workers=1)  # a runner joins
    wait_for(lambda: len(_fires(redis_url)) >= 8, timeout=15, what="4 more fires with three runners")
    first.signal(signal.SIGTERM)  # and one leaves
    assert first.wait(30) == 0
    wait_for(lambda: len(_fires(redis_url)) >= 12, timeout=15, what="4 more fires with two runners")
    second.stop()
    third.stop()
    ids = [task_id for task_id, _ in _fires(redis_url)]
    assert [i for i, n in Counter(ids).items() if n > 1] == []  # no double fire
    late = [(i, started) for i, started in _fires(redis_url) if not 0 <= started - _fire_time(i) < 0.5]
    assert late == []  # each fire at its time: none from before the runners started
    times = sorted(_fire_time(i) for i in ids)
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(times)}
    assert gaps == {1.0}, f"fire times must be consecutive seconds, got gaps {sorted(gaps)}"  # none missed
    enqueued = store(redis_url).hget("tq:stats", "enqueued:default:fire_log")  # taskqueue_runner_enqueued_total
    assert int(enqueued) == len(ids)


def test_cron_fires_within_50ms_of_its_second(make_runner: RunnerFactory, redis_url: str) -> None:
    runner = make_runner(redis_url, workers=1)
    runner.start(expect_workers=1)
    runner.stop()
    due = int(time.time()) + 4  # a second a few seconds ahead, with time to start the runner
    at = dt.datetime.fromtimestamp(due, dt.UTC)
    cron = f"  precise: {{task: fire_log, cron: '{at.second} {at.minute} {at.hour} * * *'}}\n"
    make_runner(redis_url, extra=_schedules(cron), workers=1).start(expect_workers=1)
    wait_for(lambda: len(_fires(redis_url)) == 1, timeout=15, what="the cron fire")
    ((task_id, started),) = _fires(redis_url)
    assert _fire_time(task_id) == due
    # the task body records its start; its result is written when the worker settles it, a moment later
    wait_for(lambda: store(redis_url).exists(f"tq:result:{task_id}"), timeout=5, what="the fire's result")
    body = msgpack.unpackb(store(redis_url).get(f"tq:result:{task_id}"))
    assert body["status"] == "ok"
    lateness = started - due
    print(f"\ncron fire: task started {lateness * 1000:.1f} ms after its second")
    assert 0 <= lateness < 0.05


def test_catch_up_after_downtime_fires_once_or_not_at_all(make_runner: RunnerFactory, redis_url: str) -> None:
    schedules = (
        "  eager: {task: fire_log, every: 1s, catch_up: true, misfire_grace: 100ms}\n"
        "  lazy: {task: fire_log, every: 1s, catch_up: false, misfire_grace: 100ms}\n"
    )
    runner = make_runner(redis_url, extra=_schedules(schedules), workers=1).start(expect_workers=1)
    wait_for(
        lambda: {i.split("@")[0] for i, _ in _fires(redis_url)} == {"eager", "lazy"},
        timeout=15,
        what="both schedules to fire once",
    )
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    down_from = time.time()
    wait_for(lambda: time.time() > down_from + 3.5, timeout=10, what="three fire times to pass while down")
    before = len(_fires(redis_url))
    again = make_runner(redis_url, extra=_schedules(schedules), workers=1).start(expect_workers=1)
    wait_for(lambda: len(_fires(redis_url)) >= before + 3, timeout=15, what="fires after the restart")
    again.stop()
    said = [str(line.get("msg", "")) for line in again.logs()]
    caught_up = [m for m in said if m.startswith("schedule eager: catching up the fire missed at ")]
    assert len(caught_up) == 1, said  # catch_up: true fires once for the whole downtime...
    missed_at = dt.datetime.fromisoformat(caught_up[0].rsplit(" ", 1)[1]).timestamp()
    assert down_from < missed_at and [i for i, _ in _fires(redis_url) if _fire_time(i) == missed_at] != []
    assert any(m.startswith("schedule lazy: skipping fires missed while down") for m in said)  # ...false never
    restarted_at = float(again.logs()[0]["ts"])
    lazy_in_downtime = [
        i for i, _ in _fires(redis_url) if i.startswith("lazy@") and down_from < _fire_time(i) < restarted_at - 0.2
    ]
    assert lazy_in_downtime == []
    assert int(store(redis_url).hget("tq:stats", "schedule_skipped:lazy")) == 1
