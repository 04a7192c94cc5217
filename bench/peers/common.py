"""Peer side: what every adapter shares (task bodies, pacing). Standard library and redis-py only.

The task bodies are the workload of PERFORMANCE.md, identical for every peer and for taskqueue
(`bench/jobs.py`): `INCR bench:done`, and for latency and delay runs `RPUSH bench:samples (now - arg)`
plus the INCR in one pipeline. One cached client per process (and per event loop for asyncio).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict

import redis
import redis.asyncio as aioredis

DONE_KEY = "bench:done"
SAMPLES_KEY = "bench:samples"
URL_ENV = "BENCH_REDIS_URL"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"  # per-process concurrency for settings an adapter reads at import

_sync_client: Any = None
_async_clients: dict[int, Any] = {}


class Unsupported(Exception):
    """The peer has no such feature (e.g. no bulk enqueue): the harness reports the reason."""


def url() -> str:
    value = os.environ.get(URL_ENV)
    if not value:
        raise RuntimeError(f"${URL_ENV} is not set: the harness passes the private Redis URL")
    return value


class Plan(TypedDict):
    """How a peer runs K worker processes at a given per-process concurrency (an adapter's `worker_plan()`).

    commands: one or more argvs (absolute console-script paths), started side by side as one worker
    (their process trees are measured together); env: added to their environment (e.g. CONCURRENCY_ENV for
    a setting the adapter reads at import); per_process: tasks that really run at once in one process;
    what: the setting in one line, for the table's legend.
    """

    commands: list[list[str]]
    env: dict[str, str]
    per_process: int
    what: str


def plan(commands: list[list[str]], per_process: int, what: str, env: dict[str, str] | None = None) -> Plan:
    return {"commands": commands, "env": env or {}, "per_process": per_process, "what": what}


def times(count: int, command: str) -> str:
    """`command`, or `count x command` for several commands side by side (a plan's `what`)."""
    return command if count == 1 else f"{count} x {command}"


def concurrency(default: int) -> int:
    """The per-process concurrency a worker was started with ($BENCH_CONCURRENCY), else the peer's `default`."""
    value = os.environ.get(CONCURRENCY_ENV, "")
    return int(value) if value else default


def sync_client() -> Any:
    global _sync_client  # noqa: PLW0603 - one cached client per process
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(url())
    return _sync_client


def async_client() -> Any:
    """A client bound to the running event loop (peers may run several loops, one per thread or process)."""
    loop = id(asyncio.get_running_loop())
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = aioredis.Redis.from_url(url())
    return client


# ---- task bodies ------------------------------------------------------------------------------------
def incr() -> None:
    sync_client().incr(DONE_KEY)


async def aincr() -> None:
    await async_client().incr(DONE_KEY)


def record(since: float) -> None:
    """Latency (`since` = enqueue time) or lateness (`since` = due time): push now - since, then INCR."""
    now = time.time()
    pipe = sync_client().pipeline(transaction=False)
    pipe.rpush(SAMPLES_KEY, repr(now - since))
    pipe.incr(DONE_KEY)
    pipe.execute()


async def arecord(since: float) -> None:
    now = time.time()
    pipe = async_client().pipeline(transaction=False)
    pipe.rpush(SAMPLES_KEY, repr(now - since))
    pipe.incr(DONE_KEY)
    await pipe.execute()


# ---- pacing (producers of figures 5 and 8) ----------------------------------------------------------
def paced(rate: float, count: int) -> Iterator[int]:
    """Yields 0..count-1, the k-th at start + k/rate on a monotonic clock (never bursts to catch up)."""
    started = time.monotonic()
    for k in range(count):
        pause = started + k / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        yield k


async def apaced(rate: float, count: int) -> AsyncIterator[int]:
    started = time.monotonic()
    for k in range(count):
        pause = started + k / rate - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        yield k


def timed(fn: Any, *args: Any) -> float:
    """Seconds `fn(*args)` took (perf_counter)."""
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started
