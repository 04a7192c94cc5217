"""arq adapter (runs in bench/.peers/arq): asyncio task bodies, the `arq` worker command.

arq keeps every job in one sorted set (score = due time in ms) plus a `arq:job:<id>` key with the pickled
call. A worker polls the set (`ZRANGEBYSCORE`, every `poll_delay`), claims each job with a WATCH/MULTI that
sets `arq:in-progress:<id>` (TTL job_timeout + 10 s) and removes the job from the set only once it finished.
One `arq` command is one worker process, so K processes are K `arq` commands side by side.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from arq.connections import RedisSettings, create_pool
from arq.logs import default_log_config

from bench.peers import common
from bench.peers.common import Unsupported

MODULE = "bench.peers.arq_peer"
OWN_MAX_JOBS = 10  # arq's default max_jobs
OWN_SETTING = f"max_jobs {OWN_MAX_JOBS} (arq's default), one `arq` command per process"
POLL_DELAY_S = 0.05
FILL_CONCURRENCY = 100

DISTRIBUTION = "arq"
DELIVERY = (
    "at-least-once (a job leaves arq's queue only after it ran; its in-progress key expires job_timeout + 10 s "
    "= 310 s after the start, and then any worker runs a job whose worker died again, up to max_tries 5; a job "
    "cancelled by a worker's shutdown is run again at once)"
)
SETTINGS: dict[str, object] = {
    "redis": "arq.connections.RedisSettings.from_dsn(BENCH_REDIS_URL): arq's defaults otherwise",
    "max_jobs": "C (WorkerSettings.max_jobs, read from $BENCH_CONCURRENCY at import): up to C jobs at once per "
    "process (arq's semaphore around every job); the peer's own setting is arq's default, "
    f"{OWN_MAX_JOBS}. Note: with more jobs in flight arq polls more (it re-reads the ids of jobs in progress, which "
    "stay in its sorted set, and re-checks each with a WATCH round trip on every poll)",
    "poll_delay": f"{POLL_DELAY_S} s (arq's default is 0.5 s): arq polls its sorted set and has no blocking fetch; "
    "50 ms is the setting PERFORMANCE.md quotes arq at",
    "queue_read_limit": "arq's default (max(5 x max_jobs, 100) job ids per poll)",
    "keep_result": "0: no result is stored (the bodies return None), as taskqueue's result_ttl 0",
    "job_timeout / max_tries / retry_jobs": "arq's defaults (300 s / 5 / True)",
    "serializer": "arq's default (pickle)",
    "logging": "--custom-log-dict bench.peers.arq_peer.LOG_CONFIG: arq's own log config at WARNING; at its default "
    "INFO arq logs two lines per job",
    "worker": f"`arq {MODULE}.WorkerSettings --custom-log-dict ...` (one asyncio process); 2 processes = two such "
    "commands side by side (arq has no multi-process option of its own)",
    "enqueue": "ArqRedis.enqueue_job: WATCH + EXISTS + MULTI/PSETEX/ZADD/EXEC per job",
    "fill": f"enqueue_job, {FILL_CONCURRENCY} at a time (asyncio.gather; arq has no bulk enqueue)",
    "delay": "enqueue_job(..., _defer_by=delay): the job's score is its due time; a worker takes it at the first "
    "poll after it",
    "hiredis": "installed (redis-py picks its parser up)",
}

LOG_CONFIG: dict[str, Any] = default_log_config(verbose=False)
LOG_CONFIG["handlers"]["arq.standard"]["level"] = "WARNING"
LOG_CONFIG["loggers"]["arq"]["level"] = "WARNING"


async def incr(ctx: dict[str, Any]) -> None:
    await common.aincr()


async def record(ctx: dict[str, Any], since: float) -> None:
    await common.arecord(since)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [incr, record]
    redis_settings = RedisSettings.from_dsn(common.url())
    max_jobs = common.concurrency(OWN_MAX_JOBS)
    poll_delay = POLL_DELAY_S
    keep_result = 0


async def _pool() -> Any:
    return await create_pool(WorkerSettings.redis_settings)  # pings: the connection is made before any clock


async def _enqueue(n: int) -> float:
    pool = await _pool()
    try:
        started = time.perf_counter()
        for _ in range(n):
            await pool.enqueue_job("incr")
        return time.perf_counter() - started
    finally:
        await pool.aclose()


def enqueue(n: int) -> float:
    return asyncio.run(_enqueue(n))


def enqueue_many(n: int, chunk: int) -> float:
    raise Unsupported("arq has no bulk enqueue (enqueue_job is one WATCH/MULTI/EXEC transaction per job)")


async def _fill(n: int) -> None:
    pool = await _pool()
    try:
        for start in range(0, n, FILL_CONCURRENCY):
            await asyncio.gather(*(pool.enqueue_job("incr") for _ in range(min(FILL_CONCURRENCY, n - start))))
    finally:
        await pool.aclose()


def fill(n: int) -> None:
    asyncio.run(_fill(n))


def warmup() -> None:
    asyncio.run(_fill(1))


def worker_plan(processes: int, concurrency: int | None) -> common.Plan:
    arq = str(Path(sys.executable).parent / "arq")
    argv = [arq, f"{MODULE}.WorkerSettings", "--custom-log-dict", f"{MODULE}.LOG_CONFIG"]
    jobs = OWN_MAX_JOBS if concurrency is None else concurrency
    env = {common.CONCURRENCY_ENV: str(jobs)}
    return common.plan([argv] * processes, jobs, common.times(processes, f"arq WorkerSettings (max_jobs={jobs})"), env)


async def _latency(rate: float, seconds: float) -> None:
    pool = await _pool()
    try:
        async for _ in common.apaced(rate, round(rate * seconds)):
            await pool.enqueue_job("record", time.time())
    finally:
        await pool.aclose()


def latency(rate: float, seconds: float) -> None:
    asyncio.run(_latency(rate, seconds))


async def _delay(tasks: int, delay_s: float) -> None:
    pool = await _pool()
    try:
        async for _ in common.apaced(1000, tasks):
            await pool.enqueue_job("record", time.time() + delay_s, _defer_by=delay_s)
    finally:
        await pool.aclose()


def delay(tasks: int, delay_s: float) -> None:
    asyncio.run(_delay(tasks, delay_s))
