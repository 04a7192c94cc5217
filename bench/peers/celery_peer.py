"""Celery adapter: Redis broker (kombu's Redis transport), no result backend, the `celery worker` command.

Kombu's Redis transport LPUSHes each message to a list; the worker's main process BRPOPs it, records it in the
`unacked` hash (with a sorted-set index by time) and hands it to a pool child; the ack removes it from there.
Messages left unacked by a dead worker are restored to the queue by any live worker once older than the
transport's `visibility_timeout` (1 h by default). Countdown (ETA) tasks are fetched at once and held in the
worker's timer until due.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, group

from bench.peers import common

QUEUE = "bench"
OWN_SETTING = (
    "celery worker --pool prefork --concurrency K: Celery's default pool, K child processes each running one task "
    "at a time (plus the parent doing the Redis I/O); Celery's default concurrency is the number of CPUs"
)

DISTRIBUTION = "celery"
DELIVERY = (
    "at-least-once (task_acks_late: acked after the task ran; a dead worker's unacked messages are restored by "
    "kombu's Redis transport after visibility_timeout, default 1 h)"
)
SETTINGS: dict[str, object] = {
    "broker": "Celery(broker=BENCH_REDIS_URL): kombu's Redis transport with its default transport options "
    "(visibility_timeout 1 h)",
    "result_backend": "none; task_ignore_result=True (the tasks return nothing)",
    "task_default_queue": f"{QUEUE!r}: both tasks on one queue",
    "task_acks_late": "True: ack after the task ran, Celery's at-least-once mode (the default, acks on start, "
    "loses the running task on a crash); on Redis the ack costs the same either way, only its moment moves",
    "broker_connection_retry_on_startup": "True: Celery 5's behaviour, set to silence its pending-deprecation warning",
    "worker_prefetch_multiplier": "4 (default): up to 4 x concurrency unacked messages per worker",
    "worker_at_c": f"`celery -A {__name__} worker --pool threads --concurrency C -n benchI@%h ...`: one OS process "
    "running up to C tasks at once in its C pool threads (Celery's threads pool, a ThreadPoolExecutor of C "
    "workers; the main thread does the Redis I/O and dispatch); 2 processes = two such commands side by side "
    "(node names bench1@, bench2@). Prefork would give C child processes, not one process at C",
    "worker_own": OWN_SETTING,
    "worker_options": "--loglevel WARNING --without-gossip --without-mingle --without-heartbeat: gossip, mingle and "
    "event heartbeats are cluster-monitoring traffic with no part in delivering tasks (mingle also stalls start-up "
    "waiting for replies from other workers); -O default is already the fair strategy",
    "enqueue": "task.delay(): one LPUSH per task through Celery's producer pool (connected before the clock)",
    "enqueue_many": "group(sig x chunk).apply_async() inside kombu's Producer.batch(): kombu (>= 5.7) buffers the "
    "chunk's LPUSHes in one pipeline (Celery's group alone sends one LPUSH round trip per task); building each "
    "message stays per-task Python work",
    "fill": "as enqueue_many, in chunks of 1,000",
    "delay": "task.apply_async(countdown=s): ETA held by the worker's timer",
    "redis_py": "with hiredis (redis-py's parser picks it up when installed)",
}

app: Any = Celery("bench", broker=common.url(), set_as_current=True)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.incr")  # type: ignore[untyped-decorator]
def incr() -> None:
    common.incr()


@app.task(name="bench.record")  # type: ignore[untyped-decorator]
def record(since: float) -> None:
    common.record(since)


def _connect() -> None:
    """Connect the pooled producer before any clock starts (the pool hands the same producer back)."""
    with app.producer_or_acquire() as producer, producer.channel.conn_or_acquire() as client:
        client.ping()  # the pool publishing uses (Channel.client is the worker's asynchronous one)


def _delay_incr(n: int) -> None:
    send = incr.delay
    for _ in range(n):
        send()


def enqueue(n: int) -> float:
    _connect()
    return common.timed(_delay_incr, n)


def _send_chunks(n: int, chunk: int) -> None:
    signature = incr.s()
    with app.producer_or_acquire() as producer:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            with producer.batch(max_size=size):
                group(signature.clone() for _ in range(size)).apply_async(producer=producer)


def enqueue_many(n: int, chunk: int) -> float:
    _connect()
    return common.timed(_send_chunks, n, chunk)


def fill(n: int) -> None:
    _connect()
    _send_chunks(n, 1000)


def warmup() -> None:
    incr.delay()


def _worker_argv(pool: str, concurrency: int, node: str) -> list[str]:
    script = Path(sys.executable).parent / "celery"
    return [
        str(script),
        "-A",
        __name__,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-n",
        f"{node}@%h",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    if concurrency is None:
        own = [_worker_argv("prefork", processes, "bench1")]
        return common.plan(own, 1, f"celery worker --pool prefork --concurrency {processes}")
    commands = [_worker_argv("threads", concurrency, f"bench{k + 1}") for k in range(processes)]
    return common.plan(
        commands, concurrency, common.times(processes, f"celery worker --pool threads --concurrency {concurrency}")
    )


def latency(rate: float, seconds: float) -> None:
    _connect()
    for _ in common.paced(rate, round(rate * seconds)):
        record.delay(time.time())


def delay(tasks: int, delay_s: float) -> None:
    _connect()
    for _ in common.paced(1000, tasks):
        record.apply_async(args=(time.time() + delay_s,), countdown=delay_s)
