"""Dramatiq adapter: RedisBroker, two sync actors on one queue, the `dramatiq` worker command.

Dramatiq's Redis broker keeps each message id in a list and its body in a hash; a worker fetches a batch with
one Lua call (up to its prefetch) into a per-worker "acks" set, and acks each message after the actor ran.
A dead worker's unacked messages are requeued by any live worker once its heartbeat is older than
`heartbeat_timeout`. Delayed messages go to the `<queue>.DQ` list; workers prefetch them, hold them until
their eta and then enqueue them on the real queue.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import common

QUEUE = "bench"
OWN_THREADS = 8  # dramatiq's default worker threads per process
OWN_SETTING = (
    f"dramatiq --processes K --threads {OWN_THREADS}: dramatiq's default threads per process ({OWN_THREADS}); "
    "its default process count is the number of CPUs"
)

DISTRIBUTION = "dramatiq"
DELIVERY = (
    "at-least-once (acks late: a message is acked after its actor ran; a dead worker's unacked messages are "
    "requeued once its heartbeat is older than heartbeat_timeout, default 60 s)"
)
SETTINGS: dict[str, object] = {
    "broker": "dramatiq.brokers.redis.RedisBroker(url=BENCH_REDIS_URL): defaults (namespace, heartbeat_timeout 60 s)",
    "middleware": "dramatiq's default middleware stack (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, "
    "Pipelines, Retries): what every user runs",
    "actors": f"two sync actors on the one queue {QUEUE!r}, max_retries=0 (no task fails, so retries never apply)",
    "worker_at_c": "`dramatiq bench.peers.dramatiq_peer --processes K --threads C`: dramatiq's own multi-process "
    "mode, C worker threads in each of the K processes (each thread runs one message at a time); prefetch is "
    "dramatiq's default (2 x threads), idle polling backs off up to the default worker_timeout of 1 s",
    "worker_own": OWN_SETTING,
    "enqueue": "actor.send(): one Lua call (EVALSHA dispatch) per message",
    "fill": "actor.send() in a loop (dramatiq has no bulk enqueue)",
    "delay": "actor.send_with_options(delay=ms): the message waits in the delay queue, held by a worker until due",
    "redis_py": "with hiredis (redis-py's parser picks it up when installed)",
}

broker: Any = RedisBroker(url=common.url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)  # type: ignore[untyped-decorator]
def incr() -> None:
    common.incr()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)  # type: ignore[untyped-decorator]
def record(since: float) -> None:
    common.record(since)


def _connect() -> None:
    broker.client.ping()  # the connection is made before any clock starts


def enqueue(n: int) -> float:
    _connect()
    return common.timed(_send_incr, n)


def _send_incr(n: int) -> None:
    send = incr.send
    for _ in range(n):
        send()


def enqueue_many(n: int, chunk: int) -> float:
    raise common.Unsupported(
        "dramatiq has no bulk enqueue: group(...).run() sends its messages one broker.enqueue (one Lua call) "
        "at a time, pipeline(...) chains messages, and RedisBroker has no batched enqueue"
    )


def fill(n: int) -> None:
    _connect()
    _send_incr(n)


def warmup() -> None:
    incr.send()


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    script = Path(sys.executable).parent / "dramatiq"
    threads = OWN_THREADS if concurrency is None else concurrency
    argv = [str(script), __name__, "--processes", str(processes), "--threads", str(threads)]
    return common.plan([argv], threads, f"dramatiq --processes {processes} --threads {threads}")


def latency(rate: float, seconds: float) -> None:
    _connect()
    for _ in common.paced(rate, round(rate * seconds)):
        record.send(time.time())


def delay(tasks: int, delay_s: float) -> None:
    _connect()
    delay_ms = round(delay_s * 1000)
    for _ in common.paced(1000, tasks):
        record.send_with_options(args=(time.time() + delay_s,), delay=delay_ms)
