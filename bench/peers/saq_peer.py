"""SAQ adapter (runs in bench/.peers/saq): a Redis queue, asyncio task bodies, the `saq` worker command.

SAQ stores each job as a JSON string key and its id in a sorted set of incomplete jobs; a due job's id is also
in a `queued` list. Each of a worker's `concurrency` slots blocks in BLMOVE (queued -> active list), marks the
job active (SET + PUBLISH), runs it and finishes it (one MULTI: LREM, ZREM, DEL/SETEX, then PUBLISH).
Scheduled jobs wait in the sorted set until a worker's `schedule` timer (once a second) moves them to the list.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from saq import Queue

from bench.peers import common
from bench.peers.common import Unsupported

OWN_CONCURRENCY = 10  # saq's default Worker concurrency
OWN_SETTING = f"concurrency {OWN_CONCURRENCY} (saq's default), saq --workers K"
TTL = -1  # saq: "0 means indefinitely, -1 means disabled"
FILL_CONCURRENCY = 100

DISTRIBUTION = "saq"
DELIVERY = (
    "at-most-once once a job started, with saq's default retries=1 (BLMOVE moves the job id to an `active` list "
    "and the worker marks the job active before it runs it; the sweep, every 60 s, finds a dead worker's job once "
    "it is past its timeout, 10 s by default, and marks it aborted; it would re-queue it only with retries > 1. "
    "A job taken but not yet marked active, or cancelled by a worker's shutdown, is re-queued)"
)
SETTINGS: dict[str, object] = {
    "queue": "saq.Queue.from_url(BENCH_REDIS_URL): a RedisQueue named 'default', JSON serialization (saq's default)",
    "concurrency": "C (the settings' concurrency, read from $BENCH_CONCURRENCY at import): C job slots per "
    f"process, each blocking in BLMOVE (dequeue_timeout 0: no polling); the peer's own setting is saq's default, "
    f"{OWN_CONCURRENCY}",
    "ttl": f"{TTL} per job: the finished job is deleted (saq keeps it 600 s by default), as taskqueue's result_ttl 0",
    "timeout / retries": "saq's defaults (10 s / 1)",
    "timers": "saq's defaults (schedule 1 s: its finest, the scheduler lock is a SETEX in whole seconds; sweep 60 s; "
    "abort 1 s; worker_info 10 s)",
    "logging": "saq's CLI default (WARNING: no per-job lines)",
    "worker": "`saq bench.peers.saq_peer.settings --workers K`: saq's own multi-process option (the command runs "
    "one worker and K - 1 multiprocessing children, each with the same settings: C slots per process)",
    "enqueue": "Queue.enqueue: one EVALSHA (SET job, ZADD incomplete, RPUSH queued) per job",
    "fill": f"Queue.enqueue, {FILL_CONCURRENCY} at a time (asyncio.gather; saq throttles to 20 concurrent "
    "operations; saq has no bulk enqueue)",
    "delay": "Queue.enqueue(..., scheduled=time.time() + delay): epoch seconds as a float (saq's field is typed "
    "int, the Lua scripts take any score), moved to the queue by the worker's 1 s schedule timer",
    "hiredis": "installed (saq[hiredis]; redis-py picks its parser up)",
}

queue: Any = Queue.from_url(common.url())


async def incr(ctx: dict[str, Any]) -> None:
    await common.aincr()


async def record(ctx: dict[str, Any], *, since: float) -> None:
    await common.arecord(since)


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [incr, record],
    "concurrency": common.concurrency(OWN_CONCURRENCY),
}


async def _connect() -> None:
    await queue.connect()
    await queue.redis.ping()  # the connection is made before any clock starts


async def _enqueue(n: int) -> float:
    await _connect()
    try:
        started = time.perf_counter()
        for _ in range(n):
            await queue.enqueue("incr", ttl=TTL)
        return time.perf_counter() - started
    finally:
        await queue.disconnect()


def enqueue(n: int) -> float:
    return asyncio.run(_enqueue(n))


def enqueue_many(n: int, chunk: int) -> float:
    raise Unsupported(
        "saq has no bulk enqueue (Queue.map and Queue.apply enqueue one job per call and wait for the results; "
        "Queue.batch only aborts the jobs of a failed block)"
    )


async def _fill(n: int) -> None:
    await _connect()
    try:
        for start in range(0, n, FILL_CONCURRENCY):
            await asyncio.gather(*(queue.enqueue("incr", ttl=TTL) for _ in range(min(FILL_CONCURRENCY, n - start))))
    finally:
        await queue.disconnect()


def fill(n: int) -> None:
    asyncio.run(_fill(n))


def warmup() -> None:
    asyncio.run(_fill(1))


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    saq = str(Path(sys.executable).parent / "saq")
    slots = OWN_CONCURRENCY if concurrency is None else concurrency
    argv = [saq, "bench.peers.saq_peer.settings", "--workers", str(processes)]
    what = f"saq settings --workers {processes}, concurrency={slots}"
    return common.plan([argv], slots, what, {common.CONCURRENCY_ENV: str(slots)})


async def _latency(rate: float, seconds: float) -> None:
    await _connect()
    try:
        async for _ in common.apaced(rate, round(rate * seconds)):
            await queue.enqueue("record", since=time.time(), ttl=TTL)
    finally:
        await queue.disconnect()


def latency(rate: float, seconds: float) -> None:
    asyncio.run(_latency(rate, seconds))


async def _delay(tasks: int, delay_s: float) -> None:
    await _connect()
    try:
        async for _ in common.apaced(1000, tasks):
            due = time.time() + delay_s
            await queue.enqueue("record", since=due, scheduled=due, ttl=TTL)
    finally:
        await queue.disconnect()


def delay(tasks: int, delay_s: float) -> None:
    asyncio.run(_delay(tasks, delay_s))
