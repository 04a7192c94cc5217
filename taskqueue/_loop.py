"""asyncio helpers of the runner and worker processes: the event loop (uvloop when installed: a pinned
dependency on Linux), cancellation checks, and riding out a Redis outage — said once per process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

REMIND_S = 30.0  # while Redis stays away, one reminder this often (per process)


class RedisOutage:
    """Whether Redis answers, as this process sees it. Every loop that talks to Redis reports here instead of
    logging for itself: `failed()` on an error, `answered()` on a success. An outage is then one warning per
    process, a reminder every `remind_s` while it lasts, and one info line with its length when it ends —
    not a line per loop and per try. Warnings are at most one per `remind_s` even when Redis flaps (answers
    reads but refuses writes, say): an outage that starts too soon after the last warning is not announced,
    and neither is its end."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger or logging.getLogger("taskqueue.redis")
        self.remind_s = remind_s
        self.clock = clock
        self.since: float | None = None  # when the current outage began (None: Redis answers)
        self.announced = False  # the current outage has been logged
        self._last_warning = float("-inf")

    def failed(self, what: str, exc: BaseException) -> None:
        """A call to Redis failed while `what` (e.g. "renewing the worker's lease")."""
        now = self.clock()
        if self.since is None:
            self.since, self.announced = now, False
        if now - self._last_warning < self.remind_s:
            return
        self._last_warning = now
        state = "unreachable" if _unreachable(exc) else "answering with errors"
        reason = str(exc) or type(exc).__name__
        if self.announced:
            self.log.warning("Redis still %s after %.0f s (%s: %s)", state, now - self.since, what, reason)
            return
        self.announced = True
        self.log.warning(
            "Redis %s while %s (%s); retrying, with a reminder every %.0f s until it is back",
            state,
            what,
            reason,
            self.remind_s,
        )

    def answered(self) -> None:
        """A call to Redis succeeded: ends the outage, if there was one."""
        if self.since is None:
            return
        if self.announced:
            self.log.info("Redis reachable again after %.0f s", self.clock() - self.since)
        self.since, self.announced = None, False


def _unreachable(exc: BaseException) -> bool:
    """No answer at all (refused, reset, timed out, still loading), as opposed to an error reply."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


outage = RedisOutage()  # the one of this process


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
    *,
    attempts: int | None = None,
    first_s: float = 0.1,
    longest_s: float = 2.0,
) -> T:
    """`await call()` until Redis answers, backing off from `first_s` to `longest_s`, reporting to `outage`
    (which logs once per outage, not once per try). With `attempts`, the last failure is raised after that
    many tries."""
    delay = first_s
    tries = 0
    while True:
        raise_if_cancelled()
        try:
            found = await call()
        except (RedisError, OSError) as exc:
            tries += 1
            if attempts is not None and tries >= attempts:
                raise
            outage.failed(what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest_s)
            continue
        outage.answered()
        return found
