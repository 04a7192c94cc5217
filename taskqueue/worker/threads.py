"""Sync tasks on a pool of threads, their completions handed to the event loop in batches.

`loop.run_in_executor` costs a concurrent Future, an asyncio Future chained to it and one cross-thread
wake-up of the loop per call. Here a thread that finishes a task appends the outcome to a deque and wakes
the loop only when no wake-up is pending already, so a busy loop collects many completions per wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[asyncio.Future[Any], contextvars.Context, Callable[..., Any], tuple[Any, ...]]


class ThreadRunner:
    """Up to `size` daemon threads, started as work needs them (a stuck one never blocks the exit)."""

    def __init__(self, size: int, name: str = "task") -> None:
        self.size = size
        self.name = name
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], BaseException | None, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._idle = 0  # threads waiting for a job
        self._waiting = 0  # jobs put in the inbox that no thread has taken yet
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Call `fn(*args)` in a thread, in a copy of the caller's context; await the result."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._waiting += 1
            short = self._waiting > self._idle  # every idle thread is spoken for: a job would wait behind a task
        self._inbox.put((future, contextvars.copy_context(), fn, args))
        if short and len(self._threads) < self.size:
            thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return future

    def stop(self) -> None:
        """Let idle threads end (a thread still running a task ends after it)."""
        for _ in self._threads:
            self._inbox.put(None)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._inbox.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._waiting -= 1
            if job is None:
                return
            future, context, fn, args = job
            try:
                value, error = context.run(fn, *args), None
            except BaseException as exc:  # handed to the awaiting coroutine, as run_in_executor does
                value, error = None, exc
            self._done.append((future, error, value))
            with self._lock:
                if self._wake_pending:
                    continue  # the loop has a wake-up coming: it takes this outcome too
                self._wake_pending = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False  # reset before draining: an outcome appended from now on gets a new wake-up
        done = self._done
        while done:
            future, error, value = done.popleft()
            if future.cancelled():
                continue  # the attempt timed out or the worker is stopping: nobody waits for this
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
