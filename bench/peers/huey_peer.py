"""Huey adapter (runs in bench/.peers/huey): RedisHuey, sync task bodies, the `huey_consumer` worker.

Huey pops a message from its Redis list (BRPOP) and then runs it: a consumer that dies loses the
tasks it had taken. Delays go to a sorted set that the consumer's scheduler reads once per
`scheduler_interval` (whole seconds, at least 1).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import RedisHuey

from bench.peers import common
from bench.peers.common import Unsupported

DISTRIBUTION = "huey"
DELIVERY = "at-most-once (BRPOP takes the message; a consumer that dies loses the tasks it holds)"
SCHEDULER_INTERVAL_S = 1
OWN_SETTING = (
    "huey_consumer -k process -w K: huey's multi-process mode, the form its README shows ('To run the consumer "
    "with 4 worker processes: huey_consumer my_app.huey -k process -w 4'): K worker processes, each running one "
    "task at a time (plus the consumer's main process and its scheduler process)"
)
SETTINGS: dict[str, object] = {
    "storage": "RedisHuey (one Redis list, BRPOP with read_timeout=1 s: blocking, no polling delay)",
    "results": "False: nothing reads them (the task bodies return None, which huey would not store anyway)",
    "worker_at_c": "huey_consumer -k thread -w C: C worker threads in the consumer's one OS process (plus its "
    "scheduler thread), each running one task at a time; 2 processes = two such commands side by side (huey's "
    "process mode has no threads per process)",
    "worker_own": OWN_SETTING,
    "scheduler_interval": f"-s {SCHEDULER_INTERVAL_S}: huey's finest granularity (whole seconds); delayed tasks "
    "are moved to the queue once per interval",
    "logging": "-q (warnings only): huey logs two INFO lines per task otherwise",
    "bulk_enqueue": "none: huey has no bulk API (Task.map enqueues one task per call)",
    "fill": "LPUSH of huey-serialized messages in pipelines of 1,000 (untimed set-up only)",
    "hiredis": "installed (redis-py picks its parser up)",
}

huey = RedisHuey("bench", url=common.url(), results=False)
task: Callable[[Callable[..., None]], Any] = huey.task()  # typed here: huey ships no type information


@task
def incr() -> None:
    common.incr()


@task
def record(since: float) -> None:
    common.record(since)


def enqueue(n: int) -> float:
    huey.storage.conn.ping()  # connection set-up before the clock starts
    started = time.perf_counter()
    for _ in range(n):
        incr()
    return time.perf_counter() - started


def enqueue_many(n: int, chunk: int) -> float:
    raise Unsupported("huey has no bulk enqueue (Task.map calls enqueue once per task)")


def fill(n: int) -> None:
    conn: Any = huey.storage.conn
    for start in range(0, n, 1000):
        pipe = conn.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.lpush(huey.storage.queue_key, huey.serialize_task(incr.s()))  # what huey.enqueue writes
        pipe.execute()


def warmup() -> None:
    incr()


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    consumer = str(Path(sys.executable).parent / "huey_consumer")
    tail = ["-s", str(SCHEDULER_INTERVAL_S), "-q"]
    if concurrency is None:
        argv = [consumer, f"{__name__}.huey", "-k", "process", "-w", str(processes), *tail]
        return common.plan([argv], 1, f"huey_consumer -k process -w {processes}")
    argv = [consumer, f"{__name__}.huey", "-k", "thread", "-w", str(concurrency), *tail]
    return common.plan(
        [argv] * processes, concurrency, common.times(processes, f"huey_consumer -k thread -w {concurrency}")
    )


def latency(rate: float, seconds: float) -> None:
    for _ in common.paced(rate, round(rate * seconds)):
        record(time.time())


def delay(tasks: int, delay_s: float) -> None:
    for _ in common.paced(1000, tasks):
        record.schedule((time.time() + delay_s,), delay=delay_s)
