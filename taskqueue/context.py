"""`current_task()`: what a running task may know about itself (id, name, queue, attempt), and where it
tells its progress."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

ProgressSink = Callable[[str, float, str], None]
_sink: ProgressSink | None = None  # set by the worker process


@dataclass(frozen=True, slots=True)
class TaskContext:
    id: str
    name: str
    queue: str
    attempt: int  # 1 for the first run, 2 for the first retry, ...
    max_retries: int
    admitted_at: float | None = None  # a task under rate or concurrency limits: when they let it start (Redis' clock)

    def progress(self, fraction: float, message: str = "") -> None:
        """Record how far the task is (0 .. 1) and what it does now; `status` shows the latest. Cheap to call
        often: the worker writes the latest value, one write at a time, off the task's path."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0 .. 1, got {fraction!r}")
        if _sink is not None:
            _sink(self.id, float(fraction), str(message))


# The worker stores the fields as a plain tuple (cheaper than building a TaskContext for every task,
# most of which never ask); current_task() builds the object.
Fields = tuple[str, str, str, int, int] | tuple[str, str, str, int, int, float]
_current: contextvars.ContextVar[Fields | None] = contextvars.ContextVar("taskqueue_task", default=None)


def current_task() -> TaskContext:
    """The task being run by this thread or coroutine; raises RuntimeError outside a task."""
    found = _current.get()
    if found is None:
        raise RuntimeError("current_task() called outside a running task")
    return TaskContext(*found)


def set_progress_sink(sink: ProgressSink | None) -> None:
    global _sink  # noqa: PLW0603 - one worker process, one sink
    _sink = sink


def set_current(fields: Fields | None) -> contextvars.Token[Fields | None]:
    """(id, name, queue, attempt, max_retries[, admitted_at]) of the task this coroutine or thread runs."""
    return _current.set(fields)
