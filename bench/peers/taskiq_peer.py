"""taskiq adapter: taskiq-redis RedisStreamBroker (the one with acknowledgements), async tasks, `taskiq worker`.

The stream broker XADDs each message to one stream; a worker process reads up to `xread_count` new entries per
XREADGROUP (blocking while idle) and XACKs each after the task ran (`--ack-type` default `when_saved`; there is no
result backend, so that is right after execution). Entries a dead consumer never acked stay pending in the group
and are XAUTOCLAIMed by a live worker once idle for `idle_timeout` (10 min by default).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from taskiq_redis import RedisStreamBroker

from bench.peers import common

QUEUE = "bench"
OWN_MAX_ASYNC_TASKS = 100  # taskiq worker's default --max-async-tasks
OWN_SETTING = (
    f"taskiq worker --workers K: taskiq's defaults, up to {OWN_MAX_ASYNC_TASKS} async tasks at once per process "
    "(--max-async-tasks default)"
)

DISTRIBUTION = "taskiq"
DELIVERY = (
    "at-least-once (RedisStreamBroker: XACK after the task ran; an unacked entry is XAUTOCLAIMed by a live "
    "worker after idle_timeout, default 10 min)"
)
SETTINGS: dict[str, object] = {
    "broker": f"taskiq_redis.RedisStreamBroker(url=BENCH_REDIS_URL, queue_name={QUEUE!r}, consumer_id='0'): "
    "the broker taskiq-redis's README leads with and the only one with acknowledgements (ListQueueBroker and "
    "PubSubBroker lose a task on a worker crash); consumer_id '0' instead of '$' so the consumer group also "
    "delivers entries added before it was created (a queue, not a feed); other options default "
    "(xread_count 100, xread_block 2 s, idle_timeout 10 min)",
    "result_backend": "none (taskiq's default dummy backend): the tasks return nothing",
    "tasks": f"two async tasks (common.aincr, common.arecord) on the one stream {QUEUE!r}",
    "worker_at_c": "`taskiq worker bench.peers.taskiq_peer:broker --workers K --max-async-tasks C --log-level "
    "WARNING`: taskiq's own multi-process mode, each process running up to C tasks at once (the receiver holds a "
    "semaphore of C around every task); defaults otherwise (--max-prefetch 0, --ack-type when_saved); WARNING "
    "because at the default INFO taskiq writes one log line per task, which the other peers (and taskqueue) do not",
    "worker_own": OWN_SETTING,
    "event_loop": "uvloop (taskiq's `uv` extra: taskiq's worker uses it when installed)",
    "enqueue": "await task.kiq(): one XADD per task, client started (broker.startup()) before the clock",
    "redis_py": "with hiredis (redis-py's parser picks it up when installed)",
}

broker: Any = RedisStreamBroker(url=common.url(), queue_name=QUEUE, consumer_id="0")


@broker.task(task_name="bench.incr")  # type: ignore[untyped-decorator]
async def incr() -> None:
    await common.aincr()


@broker.task(task_name="bench.record")  # type: ignore[untyped-decorator]
async def record(since: float) -> None:
    await common.arecord(since)


async def _started() -> None:
    """The client side: declare the consumer group and open a pooled connection before any clock starts."""
    await broker.startup()
    async with Redis(connection_pool=broker.connection_pool) as client:
        await client.ping()


async def _kiq_incr(n: int) -> None:
    kiq = incr.kiq
    for _ in range(n):
        await kiq()


async def _enqueue(n: int) -> float:
    await _started()
    try:
        started = time.perf_counter()
        await _kiq_incr(n)
        return time.perf_counter() - started
    finally:
        await broker.shutdown()


def enqueue(n: int) -> float:
    return asyncio.run(_enqueue(n))


def enqueue_many(n: int, chunk: int) -> float:
    raise common.Unsupported(
        "taskiq has no bulk enqueue: every kiq() is one broker.kick (one XADD round trip for RedisStreamBroker)"
    )


async def _fill(n: int) -> None:
    await _started()
    try:
        await _kiq_incr(n)
    finally:
        await broker.shutdown()


def fill(n: int) -> None:
    asyncio.run(_fill(n))


def warmup() -> None:
    asyncio.run(_fill(1))


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    script = Path(sys.executable).parent / "taskiq"
    slots = [] if concurrency is None else ["--max-async-tasks", str(concurrency)]
    argv = [str(script), "worker", f"{__name__}:broker", "--workers", str(processes), *slots, "--log-level", "WARNING"]
    what = " ".join(["taskiq worker --workers", str(processes), *slots])
    return common.plan([argv], OWN_MAX_ASYNC_TASKS if concurrency is None else concurrency, what)


async def _latency(rate: float, seconds: float) -> None:
    await _started()
    try:
        async for _ in common.apaced(rate, round(rate * seconds)):
            await record.kiq(time.time())
    finally:
        await broker.shutdown()


def latency(rate: float, seconds: float) -> None:
    asyncio.run(_latency(rate, seconds))


def delay(tasks: int, delay_s: float) -> None:
    raise common.Unsupported(
        "taskiq-redis brokers have no delayed delivery: taskiq delays a task only through a separate "
        "`taskiq scheduler` process polling a schedule source (schedule_by_time) at whole-second resolution, "
        "not through the worker"
    )
