"""Run a coroutine on uvloop when it is installed (it is a pinned dependency on Linux), else asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

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
