"""Crash safety through the built PEX: SIGKILLed workers, a SIGKILLed runner, a Redis restart, and
graceful shutdown. Every accepted task must complete; duplicates are reported, not hidden."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from taskqueue.client import Client
from tests.conftest import RedisServer, wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs, store
from tests.e2e.test_http import fetch, http_url

N = 2000


def _report(name: str, done: dict[int, int]) -> int:
    duplicates = sum(count - 1 for count in done.values())
    print(f"\n{name}: {len(done)} distinct tasks completed, {duplicates} duplicate run(s)")
    return duplicates


def _enqueue_batch(url: str, sleep_s: float = 0.005) -> None:
    Client(url).enqueue_many([("record", (n, sleep_s), {}) for n in range(N)])


def test_sigkill_workers_repeatedly_loses_nothing(make_runner: RunnerFactory, redis_url: str) -> None:
    runner = make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)
    _enqueue_batch(redis_url)
    kills = 0
    for goal in (300, 800, 1300):
        wait_for(lambda goal=goal: len(runs(redis_url)) >= goal, timeout=60, what=f"{goal} tasks done")
        victim = runner.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        kills += 1
        wait_for(
            lambda victim=victim: len(runner.worker_pids()) == 2 and victim not in runner.worker_pids(),
            timeout=20,
            what="a replacement worker",
        )
    wait_for(lambda: len(runs(redis_url)) == N, timeout=90, what="all tasks after the kills")
    _report(f"{kills} worker SIGKILLs", runs(redis_url))
    assert runner.alive()
    db = store(redis_url)
    assert db.zcard("tq:dead:index") == 0
    wait_for(
        lambda: all(db.hlen(k) == 0 for k in db.keys("tq:inflight:*")),
        timeout=10,
        what="nothing left in flight",
    )


def test_sigkill_whole_runner_then_a_new_runner_completes_everything(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    first = make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)
    _enqueue_batch(redis_url)
    wait_for(lambda: len(runs(redis_url)) >= 500, timeout=60, what="500 tasks done")
    first.kill_all()
    assert len(runs(redis_url)) < N, "the kill came too late to test anything"
    second = make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)
    wait_for(lambda: len(runs(redis_url)) == N, timeout=90, what="all tasks after the runner was killed")
    _report("runner SIGKILL", runs(redis_url))
    assert second.alive()
    assert store(redis_url).zcard("tq:dead:index") == 0


def test_redis_restart_with_aof_mid_run(make_runner: RunnerFactory, own_redis: RedisServer) -> None:
    url = own_redis.url
    runner = make_runner(url, workers=2, slots=10).start(expect_workers=2)
    _enqueue_batch(url, sleep_s=0.01)
    wait_for(lambda: len(runs(url)) >= 400, timeout=60, what="400 tasks done")
    own_redis.stop(kill=True)  # SIGKILL: only what appendfsync always already wrote survives
    own_redis.start()
    wait_for(lambda: len(runs(url)) == N, timeout=120, what="all tasks after the Redis restart")
    _report("Redis SIGKILL + restart", runs(url))
    assert runner.alive()


def _pids_saying(runner: Runner, start: str, level: str) -> set[int]:
    return {int(line["pid"]) for line in runner.logs() if line.get("level") == level and line["msg"].startswith(start)}


def _warnings(runner: Runner, after: float) -> list[dict[str, Any]]:
    return [line for line in runner.logs() if line.get("level") == "warning" and line.get("ts", 0) >= after]


def test_a_redis_outage_is_said_once_per_process_and_so_is_its_end(
    make_runner: RunnerFactory, own_redis: RedisServer
) -> None:
    url = own_redis.url
    runner = make_runner(url, workers=2, http={"port": 0}).start(expect_workers=2)
    base = http_url(runner)
    processes = {runner.pid, *runner.worker_pids()}
    stopped_at = time.time()
    own_redis.stop()
    wait_for(
        lambda: _pids_saying(runner, "Redis unreachable while ", "warning") >= processes,
        timeout=15,
        what="the outage warning of the runner and of each worker process",
    )
    assert fetch(f"{base}/tasks/queues")[0] == 503  # the HTTP API meets it too, and says it through the same line
    assert fetch(f"{base}/tasks/queues")[0] == 503
    # The outage itself: a few seconds in which every loop of every process keeps failing.
    wait_for(lambda: time.time() - stopped_at >= 5, timeout=10, what="a 5 s outage")
    own_redis.start()  # the same port, the same data (AOF)
    wait_for(
        lambda: _pids_saying(runner, "Redis reachable again after ", "info") >= processes,
        timeout=20,
        what="'Redis reachable again' from the runner and each worker process",
    )
    warnings = _warnings(runner, stopped_at)
    assert len(warnings) == len(processes), [w["msg"] for w in warnings]  # one per process, nothing else
    assert {w["logger"] for w in warnings} == {"taskqueue.redis"}
    again = [line["msg"] for line in runner.logs() if line["msg"].startswith("Redis reachable again after ")]
    assert all(int(msg.split()[4]) >= 4 for msg in again), again  # "… after 5 s": the outage's length
    Client(url).enqueue("record", 1, 0.0)  # and work flows again
    wait_for(lambda: runs(url) == {1: 1}, timeout=15, what="a task enqueued after the outage")
    assert runner.alive() and set(runner.worker_pids()) == processes - {runner.pid}


def test_graceful_shutdown_finishes_running_tasks_within_grace(make_runner: RunnerFactory, redis_url: str) -> None:
    runner = make_runner(redis_url, workers=1, slots=5, grace="60s").start(expect_workers=1)
    Client(redis_url).enqueue_many([("record", (n, 1.0), {}) for n in range(4)] + [("arecord", (4, 1.0), {})])
    wait_for(
        lambda: store(redis_url).hlen(next(iter(store(redis_url).keys("tq:inflight:*")), "none")) == 5,
        timeout=10,
        what="5 tasks running",
    )
    runner.signal(signal.SIGTERM)
    assert runner.wait(20) == 0  # as soon as the tasks are done: not at the end of the 60 s grace period
    assert runs(redis_url) == {n: 1 for n in range(5)}


def test_shutdown_beyond_grace_hands_back_and_a_new_runner_completes(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    runner = make_runner(redis_url, workers=1, slots=5, grace="500ms").start(expect_workers=1)
    Client(redis_url).enqueue_many([("slow_once", (n, 60.0), {}) for n in range(5)])
    db = store(redis_url)
    wait_for(lambda: len(db.keys("test:slow:*")) == 5, timeout=10, what="5 slow tasks started")
    runner.signal(signal.SIGTERM)
    assert runner.wait(20) == 0
    assert db.llen("tq:queue:default") == 5  # handed back, not lost
    assert runs(redis_url) == {}
    make_runner(redis_url, workers=1, slots=5).start(expect_workers=1)
    wait_for(lambda: runs(redis_url) == {n: 1 for n in range(5)}, timeout=20, what="handed-back tasks completed")
