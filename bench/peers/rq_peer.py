"""RQ adapter (runs in bench/.peers/rq): one Queue, the job functions are common.incr / common.record.

RQ's default `Worker` forks a work horse per job (isolation at the price of a fork per task); the
documented `SimpleWorker` runs jobs in the worker process itself, which is the fast option for short
tasks, so both the 1- and the 2-process runs use it. Delayed jobs (`enqueue_in`) are moved to the
queue by RQ's scheduler, which a worker started with `--with-scheduler` runs and which wakes up once
per second (`RQScheduler.interval` = 1).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue

from bench.peers import common

DISTRIBUTION = "rq"
DELIVERY = (
    "at-most-once by default (a job whose worker dies goes to the FailedJobRegistry as abandoned; "
    "re-run only with a Retry)"
)
QUEUE = "bench"
RESULT_TTL = 0
WORKER_CLASS = "rq.worker.SimpleWorker"
OWN_SETTING = "the same as at C: one job at a time per worker process is rq's only mode"
SETTINGS: dict[str, object] = {
    "queue": f"one Queue({QUEUE!r})",
    "worker_class": f"{WORKER_CLASS}: runs jobs in the worker process (the default rq.Worker forks a "
    "work horse per job, far slower for short tasks)",
    "concurrency": "1 task at a time per worker process, by design (an rq worker takes the next job only when "
    "the last one finished; rq has no threads or async slots), whatever C is: shown marked, and left out of "
    "the best peer of the worker figures unless C = 1",
    "worker_1_process": f"rq worker {QUEUE} -w {WORKER_CLASS} --with-scheduler -q: one worker process "
    "(the scheduler is a child process it forks, polling every 1 s)",
    "worker_2_processes": f"rq worker-pool {QUEUE} -n 2 -w {WORKER_CLASS} -q: rq's own multi-process mode, the "
    "pool's main process and two worker processes (rq 3 pool workers run the scheduler too)",
    "worker_own": "the same (rq has no other concurrency setting)",
    "result_ttl": f"{RESULT_TTL}: the job hash is deleted when it succeeds (the bench never reads results; "
    "taskqueue runs with result_ttl 0 as well)",
    "bulk_enqueue": "Queue.enqueue_many(Queue.prepare_data(...)) per chunk (one pipeline per chunk)",
    "delay": "Queue.enqueue_in(timedelta(seconds=1), ...); the scheduler polls once per second",
    "logging": "-q (errors only): rq logs two INFO lines per job otherwise",
    "hiredis": "installed (redis-py picks its parser up)",
}

connection = Redis.from_url(common.url())
queue = Queue(QUEUE, connection=connection)


def enqueue(n: int) -> float:
    connection.ping()  # connection set-up before the clock starts
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue(common.incr, result_ttl=RESULT_TTL)
    return time.perf_counter() - started


def _many(n: int, chunk: int) -> None:
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        queue.enqueue_many([Queue.prepare_data(common.incr, result_ttl=RESULT_TTL) for _ in range(size)])


def enqueue_many(n: int, chunk: int) -> float:
    connection.ping()
    return common.timed(_many, n, chunk)


def fill(n: int) -> None:
    _many(n, 1000)


def warmup() -> None:
    queue.enqueue(common.incr, result_ttl=RESULT_TTL)


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    """rq runs one job at a time per worker process whatever `concurrency` asks for."""
    rq = str(Path(sys.executable).parent / "rq")
    common_args = ["-u", common.url(), "-w", WORKER_CLASS, "-q"]
    if processes == 1:
        return common.plan([[rq, "worker", QUEUE, *common_args, "--with-scheduler"]], 1, "rq worker (1 job at a time)")
    argv = [rq, "worker-pool", QUEUE, "-n", str(processes), *common_args]
    return common.plan([argv], 1, f"rq worker-pool -n {processes} (1 job at a time per process)")


def latency(rate: float, seconds: float) -> None:
    for _ in common.paced(rate, round(rate * seconds)):
        queue.enqueue(common.record, time.time(), result_ttl=RESULT_TTL)


def delay(tasks: int, delay_s: float) -> None:
    wait: Any = timedelta(seconds=delay_s)
    for _ in common.paced(1000, tasks):
        queue.enqueue_in(wait, common.record, time.time() + delay_s, result_ttl=RESULT_TTL)
