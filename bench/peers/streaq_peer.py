"""streaq adapter (runs in bench/.peers/streaq): a Redis-streams worker, asyncio task bodies, `streaq run`.

streaq keeps each task's data in its own key and its id in a Redis stream read by one consumer group. A worker
fetches up to its free prefetch in one call (Redis functions: XAUTOCLAIM of idle messages, then XREADGROUP; a
blocking XREADGROUP when there are none), runs each task and then acks it (XACK + XDEL and clean-up in one
MULTI). Delayed tasks wait in a sorted set that every worker moves to the stream every 0.5 s.
streaq talks to Redis through coredis; redis-py is in the venv only for common.py's task bodies.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from streaq import Worker

from bench.peers import common

OWN_CONCURRENCY = 16  # streaq's default Worker concurrency
OWN_SETTING = f"concurrency {OWN_CONCURRENCY} (streaq's default), streaq run --workers K"

DISTRIBUTION = "streaq"
DELIVERY = (
    "at-least-once (acks late: a task's stream message is acked after it ran; a running task's message is kept "
    "fresh by its worker, and a dead worker's messages are reclaimed by any worker (XAUTOCLAIM) once idle for "
    "idle_timeout, 60 s by default, up to max_tries 3)"
)
SETTINGS: dict[str, object] = {
    "worker": "streaq.Worker(redis_url=BENCH_REDIS_URL, concurrency=...): streaq's defaults otherwise (queue "
    "'default', pickle, idle_timeout 60 s, asyncio backend)",
    "concurrency": "C (Worker(concurrency=...), read from $BENCH_CONCURRENCY at import): up to C tasks at once per "
    "process; prefetch is streaq's default (concurrency), so a worker holds up to 2 x C messages; the peer's own "
    f"setting is streaq's default, {OWN_CONCURRENCY}",
    "tasks": "@worker.task(ttl=0, silent=True): no result is stored (streaq keeps results 5 min by default), as "
    "taskqueue's result_ttl 0; silent: no per-task INFO lines (streaq's CLI always logs at INFO, two lines per "
    "task otherwise); max_tries 3, no timeout (streaq's defaults)",
    "worker_command": "`streaq run bench.peers.streaq_peer:worker --workers K`: streaq's own multi-process option "
    "(the command runs one worker and K - 1 multiprocessing children, each at C)",
    "enqueue": "await task.enqueue(): one FCALL publish_task per task (inside `async with worker`)",
    "enqueue_many": "Worker.enqueue_many(tasks): one pipeline of FCALL publish_task per chunk",
    "fill": "Worker.enqueue_many in chunks of 1,000",
    "delay": "task.enqueue(...).start(delay=timedelta): into the delayed sorted set, moved to the stream by a "
    "worker's 0.5 s schedule loop (fixed in streaq)",
    "hiredis": "installed for redis-py (common.py's task bodies); coredis does not use it",
}

worker: Any = Worker(redis_url=common.url(), concurrency=common.concurrency(OWN_CONCURRENCY))


async def incr() -> None:
    await common.aincr()


async def record(since: float) -> None:
    await common.arecord(since)


# Registered without the decorator syntax (streaq is untyped here); streaq names the tasks "incr" and "record".
incr_task: Any = worker.task(ttl=0, silent=True)(incr)
record_task: Any = worker.task(ttl=0, silent=True)(record)


async def _enqueue(n: int) -> float:
    async with worker:  # connects and loads streaq's Redis functions before the clock starts
        started = time.perf_counter()
        for _ in range(n):
            await incr_task.enqueue()
        return time.perf_counter() - started


def enqueue(n: int) -> float:
    return asyncio.run(_enqueue(n))


async def _enqueue_many(n: int, chunk: int) -> float:
    async with worker:
        started = time.perf_counter()
        for start in range(0, n, chunk):
            await worker.enqueue_many([incr_task.enqueue() for _ in range(min(chunk, n - start))])
        return time.perf_counter() - started


def enqueue_many(n: int, chunk: int) -> float:
    return asyncio.run(_enqueue_many(n, chunk))


def fill(n: int) -> None:
    asyncio.run(_enqueue_many(n, 1000))


def warmup() -> None:
    asyncio.run(_enqueue(1))


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    streaq = str(Path(sys.executable).parent / "streaq")
    slots = OWN_CONCURRENCY if concurrency is None else concurrency
    argv = [streaq, "run", "bench.peers.streaq_peer:worker", "--workers", str(processes)]
    what = f"streaq run --workers {processes}, concurrency={slots}"
    return common.plan([argv], slots, what, {common.CONCURRENCY_ENV: str(slots)})


async def _latency(rate: float, seconds: float) -> None:
    async with worker:
        async for _ in common.apaced(rate, round(rate * seconds)):
            await record_task.enqueue(time.time())


def latency(rate: float, seconds: float) -> None:
    asyncio.run(_latency(rate, seconds))


async def _delay(tasks: int, delay_s: float) -> None:
    async with worker:
        async for _ in common.apaced(1000, tasks):
            await record_task.enqueue(time.time() + delay_s).start(delay=timedelta(seconds=delay_s))


def delay(tasks: int, delay_s: float) -> None:
    asyncio.run(_delay(tasks, delay_s))
