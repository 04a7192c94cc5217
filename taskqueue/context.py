"""`current_task()`: what a running task may know about itself (id, name, queue, attempt)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaskContext:
    id: str
    name: str
    queue: str
    attempt: int  # 1 for the first run, 2 for the first retry, ...
    max_retries: int


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("taskqueue_task", default=None)


def current_task() -> TaskContext:
    """The task being run by this thread or coroutine; raises RuntimeError outside a task."""
    found = _current.get()
    if found is None:
        raise RuntimeError("current_task() called outside a running task")
    return found


def set_current(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(context)


def reset_current(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
