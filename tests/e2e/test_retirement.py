"""Every path that retires a worker while tasks are in flight, through the built PEX (issue 12, part A): the
runner SIGKILLed alone (its workers stop by themselves), reloads rolling the workers, the autoscaler retiring
workers under bursts. Every task runs, none is recovered as an orphan (that counter is the regression
signal: with it at 0, nothing depended on the defensive pass), and no in-flight hash is left unregistered.

`TQ_TRIALS=50 ./test.sh tests/e2e/test_retirement.py -s` repeats each scenario 50 times (the fault campaign);
CI runs a few trials of each."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, _children, runs, store

TRIALS = int(os.environ.get("TQ_TRIALS", "0"))
SCALER = (
    "{enabled: true, min_workers: 1, max_workers: 4, scale_up_threshold: 5.0, scale_down_threshold: 1.0, "
    "scale_up_count: 2, scale_down_count: 1, interval: 250ms, cooldown: 250ms}"
)


def _trials(default: int) -> list[int]:
    return list(range(TRIALS or default))


def _check(db: Any, redis_url: str, count: int, label: str) -> None:
    wait_for(lambda: len(runs(redis_url)) == count, timeout=60, what=f"all {count} tasks ({label})")
    done = runs(redis_url)
    duplicates = sum(n - 1 for n in done.values())
    print(f"\n{label}: {len(done)}/{count} ran, {duplicates} duplicate run(s)")
    assert set(done) == set(range(count))
    assert int(db.hget("tq:stats", "orphaned_recovered") or 0) == 0
    assert db.zcard("tq:dead:index") == 0

    def no_unregistered_holders() -> bool:
        holders = [k.decode().removeprefix("tq:inflight:") for k in db.keys("tq:inflight:*")]
        return all(db.zscore("tq:workers", w) is not None for w in holders)

    wait_for(no_unregistered_holders, timeout=10, what="no in-flight hash without a registration")


def _gone(pids: list[int]) -> Callable[[], bool]:
    def check() -> bool:
        alive = 0
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, 0)
                alive += 1
        return alive == 0

    return check


@pytest.mark.parametrize("trial", _trials(3))
def test_runner_sigkilled_alone_its_workers_retire_and_nothing_is_lost(
    make_runner: RunnerFactory, redis_url: str, trial: int
) -> None:
    db = store(redis_url)
    first: Runner = make_runner(redis_url, workers=2, slots=2).start(expect_workers=2)
    Client(redis_url).enqueue_many([("record", (n, 0.02), {}) for n in range(200)])
    wait_for(lambda: len(runs(redis_url)) >= 20 + 5 * (trial % 10), timeout=30, what="the drain under way")
    workers = first.worker_pids()
    os.kill(first.pid, signal.SIGKILL)  # the runner only: its workers notice and stop by themselves
    first.wait(10)
    wait_for(_gone(workers), timeout=20, what="the orphaned workers to stop")
    make_runner(redis_url, workers=2, slots=2).start(expect_workers=2)
    _check(db, redis_url, 200, f"runner-only SIGKILL, trial {trial}")


@pytest.mark.parametrize("trial", _trials(1))
def test_three_reloads_during_a_drain_lose_nothing(make_runner: RunnerFactory, redis_url: str, trial: int) -> None:
    db = store(redis_url)
    runner: Runner = make_runner(redis_url, workers=2, slots=2).start(expect_workers=2)
    Client(redis_url).enqueue_many([("record", (n, 0.02), {}) for n in range(300)])
    for reload in range(3):
        wait_for(lambda r=reload: len(runs(redis_url)) >= 30 + 60 * r, timeout=30, what="the drain under way")
        runner.signal(signal.SIGHUP)
        wait_for(
            lambda r=reload: sum(str(x.get("msg", "")).startswith("reloaded ") for x in runner.logs()) > r,
            timeout=20,
            what=f"reload {reload + 1}",
        )
    _check(db, redis_url, 300, f"three reloads, trial {trial}")
    assert runner.alive()


@pytest.mark.parametrize("trial", _trials(1))
def test_autoscaler_retiring_workers_under_bursts_loses_nothing(
    make_runner: RunnerFactory, redis_url: str, trial: int
) -> None:
    db = store(redis_url)
    runner: Runner = make_runner(redis_url, workers=1, slots=2, autoscaler=SCALER).start(expect_workers=1)
    client = Client(redis_url)
    total = 0

    def downs() -> int:
        return sum(str(x.get("msg", "")).startswith("scale down") for x in runner.logs())

    for burst in range(4):  # bursts and lulls: up while the queue is long, down in its tail with tasks in flight
        before = downs()
        client.enqueue_many([("record", (total + n, 0.02), {}) for n in range(100)])
        total += 100
        wait_for(lambda t=total: len(runs(redis_url)) >= t, timeout=60, what=f"burst {burst + 1} done")
        wait_for(lambda b=before: downs() > b, timeout=20, what=f"a scale-down after burst {burst + 1}")
    _check(db, redis_url, total, f"autoscaler bursts, trial {trial}")


def test_workers_whose_runner_died_while_they_started_stop_too(make_runner: RunnerFactory, redis_url: str) -> None:
    """The runner SIGKILLed right after it spawned its workers, before they looked at their parent: they
    must still notice (they know the runner's pid) and stop, not run on forever without a runner."""
    runner: Runner = make_runner(redis_url, workers=2, slots=2)
    runner.start()
    children: list[int] = []

    def spawned() -> bool:
        children[:] = [int(pid) for pid in _children(runner.pid)]
        return len(children) >= 2

    wait_for(spawned, timeout=20, interval=0.005, what="the worker processes spawned")
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    try:
        wait_for(_gone(children), timeout=15, what="workers that outlived their runner to stop")
    finally:  # never leave them behind, even when the test fails
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    db = store(redis_url)
    wait_for(lambda: db.zcard("tq:workers") == 0, timeout=10, what="their registrations gone")
