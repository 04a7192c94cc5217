"""The benchmark's task bodies, imported by the runner through the generated YAML's `python_path`.

Every task records its completion with one `INCR bench:done` on the benchmark's Redis (URL from
`$BENCH_REDIS_URL`); the latency variants push their measurement in the same round trip (a pipeline).
Sync variants run in the worker's thread pool, async ones on its event loop. Clients are created lazily
(importing this module must not connect: the runner imports it to validate the config) and cached per
process; the async one is bound to the worker's single event loop.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
import redis.asyncio as aioredis

DONE_KEY = "bench:done"
SAMPLES_KEY = "bench:samples"
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_sync_client: Any = None
_async_client: Any = None


def _url() -> str:
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_URL)


def _sync() -> Any:
    global _sync_client  # noqa: PLW0603 - one cached client per worker process
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(_url())
    return _sync_client


def _async() -> Any:
    global _async_client  # noqa: PLW0603 - one cached client per worker process (one event loop)
    if _async_client is None:
        _async_client = aioredis.Redis.from_url(_url())
    return _async_client


def noop_incr() -> None:
    """Sync no-op: one INCR."""
    _sync().incr(DONE_KEY)


async def anoop_incr() -> None:
    """Async no-op: one INCR."""
    await _async().incr(DONE_KEY)


async def astep_incr(*_previous: Any) -> int:
    """Async workflow step (figure 9): one INCR; takes whatever the step before returned."""
    await _async().incr(DONE_KEY)
    return 1


def latency(enqueued_at: float) -> None:
    """Sync: push (start - enqueued_at) and INCR, one round trip."""
    started = time.time()
    pipe = _sync().pipeline(transaction=False)
    pipe.rpush(SAMPLES_KEY, repr(started - enqueued_at))
    pipe.incr(DONE_KEY)
    pipe.execute()


async def alatency(enqueued_at: float) -> None:
    """Async: push (start - enqueued_at) and INCR, one round trip."""
    started = time.time()
    pipe = _async().pipeline(transaction=False)
    pipe.rpush(SAMPLES_KEY, repr(started - enqueued_at))
    pipe.incr(DONE_KEY)
    await pipe.execute()


def sleep_incr(seconds: float) -> None:
    """Sync work of a given length (the autoscaling burst): sleep, then one INCR."""
    time.sleep(seconds)
    _sync().incr(DONE_KEY)
