"""asyncio helpers of the runner and worker processes: the event loop (uvloop when installed: a pinned
dependency on Linux), cancellation checks, and riding out a Redis outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


def raise_if_cancelled() -> None:
    """Loops that talk to Redis call this every round: redis-py (8.1, on 3.11) can swallow a task's
    cancellation inside a command, and the loop would then go on forever after being told to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def ride_out(
    call: Callable[[], Awaitable[T]],
    what: str,
    logger: logging.Logger,
    *,
    attempts: int | None = None,
    first_s: float = 0.1,
    longest_s: float = 2.0,
) -> T:
    """`await call()` until Redis answers, backing off from `first_s` to `longest_s`, with one warning per
    outage (not one per try). With `attempts`, the last failure is raised after that many tries."""
    delay = first_s
    tries = 0
    while True:
        raise_if_cancelled()
        try:
            return await call()
        except (RedisError, OSError) as exc:
            tries += 1
            if attempts is not None and tries >= attempts:
                raise
            if tries == 1:
                logger.warning("Redis unavailable while %s (%s); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest_s)
