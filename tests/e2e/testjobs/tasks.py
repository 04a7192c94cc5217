"""Test tasks. Every run is recorded in Redis so tests can count executions and duplicates."""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import platform
import sys
import time
from typing import Any

import redis
import redis.asyncio as aioredis

import taskqueue


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])


def record(n: int, sleep_s: float = 0.0) -> int:
    """Sync: count one run of item n."""
    if sleep_s:
        time.sleep(sleep_s)
    _redis().hincrby("test:runs", str(n), 1)
    return n


async def arecord(n: int, sleep_s: float = 0.0) -> int:
    """Async: count one run of item n."""
    if sleep_s:
        await asyncio.sleep(sleep_s)
    client = aioredis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    await client.hincrby("test:runs", str(n), 1)
    await client.aclose()
    return n


class Recorder:
    """Seed-style class task: constructed with the kwargs, then execute()."""

    def __init__(self, n: int, label: str = "") -> None:
        self.n = n
        self.label = label

    def execute(self) -> dict[str, Any]:
        _redis().hincrby("test:runs", str(self.n), 1)
        return {"n": self.n, "label": self.label}


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    ctx = taskqueue.current_task()
    return {
        "args": list(args),
        "kwargs": kwargs,
        "task": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
    }


def order(tag: str) -> None:
    _redis().rpush("test:order", tag)


def always_fails(key: str) -> None:
    """Records the time of every attempt, then fails."""
    _redis().rpush(f"test:attempts:{key}", repr(time.time()))
    raise ValueError(f"boom {key}")


def retry_once(key: str) -> int:
    attempt = taskqueue.current_task().attempt
    _redis().rpush(f"test:attempts:{key}", repr(time.time()))
    if attempt == 1:
        raise taskqueue.Retry(delay=0.2)
    return attempt


def reject(key: str) -> None:
    _redis().rpush(f"test:attempts:{key}", repr(time.time()))
    raise taskqueue.Reject(f"not acceptable: {key}")


def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def sleep_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def slow_once(n: int, seconds: float) -> int:
    """Sleeps `seconds` on the first delivery only (marker in Redis), then records the run."""
    if _redis().set(f"test:slow:{n}", 1, nx=True):
        time.sleep(seconds)
    _redis().hincrby("test:runs", str(n), 1)
    return n


def fire_log() -> None:
    """Records which fire this is (the deterministic id) and when it started."""
    _redis().rpush("test:fires", f"{taskqueue.current_task().id}|{time.time()!r}")


def added_later(n: int) -> int:
    """Declared only by the reloaded YAML."""
    _redis().hincrby("test:runs", str(n), 1)
    return n


def add(x: int, y: int = 0, sleep_s: float = 0.0) -> int:
    """Workflow steps: a chain prepends the previous result as x."""
    if sleep_s:
        time.sleep(sleep_s)
    return x + y


def total(values: list[int], tag: str = "") -> int:
    """A chord's callback: counts its own runs (by tag) so tests see it ran exactly once, with what."""
    if tag:
        attempt = taskqueue.current_task().attempt  # a re-run after its worker died is a later attempt
        _redis().hincrby("test:callbacks", tag, 1)
        _redis().hincrby("test:callback_attempts", f"{tag}:{attempt}", 1)
        _redis().hset("test:callback_input", tag, repr(sorted(values)))
    return sum(values)


def flaky(x: int, key: str) -> int:
    """Fails until test:flaky:<key> exists (its YAML entry allows no retry: it is dead-lettered at once)."""
    if not _redis().exists(f"test:flaky:{key}"):
        raise ValueError(f"{key} is not ready")
    return x


def gated(n: int, gate: str = "test:gate") -> int:
    """Records that it started, waits (at most 60 s) until the key `gate` exists, then records the run."""
    client = _redis()
    client.rpush("test:started", f"{n}|{os.getpid()}|{time.time()!r}")
    deadline = time.monotonic() + 60
    while not client.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    client.hincrby("test:runs", str(n), 1)
    return n


async def agated(n: int, gate: str = "test:gate") -> int:
    """Async gated(): a running async task, for cancel."""
    client = aioredis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    try:
        await client.rpush("test:started", f"{n}|{os.getpid()}|{time.time()!r}")
        deadline = time.monotonic() + 60
        while not await client.exists(gate) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await client.hincrby("test:runs", str(n), 1)
    finally:
        await client.aclose()
    return n


def limited(n: int, tenant: str = "", sleep_s: float = 0.0, gate: str = "", busy_s: float = 0.0) -> int:
    """A task under limits: records its start ("n|tenant|admitted at|pid|body's start") and, when it ends,
    the span its body ran ("n|start|end"), so a test can count how many ran at once. `busy_s`: CPU it burns."""
    began = time.time()
    client = _redis()
    admitted = taskqueue.current_task().admitted_at
    client.rpush("test:starts", f"{n}|{tenant}|{admitted!r}|{os.getpid()}|{began!r}")
    try:
        if sleep_s:
            time.sleep(sleep_s)
        busy_until = time.monotonic() + busy_s
        while time.monotonic() < busy_until:
            pass
        deadline = time.monotonic() + 60
        while gate and not client.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.rpush("test:spans", f"{n}|{began!r}|{time.time()!r}")
    client.hincrby("test:runs", str(n), 1)
    return n


def partner(n: int) -> int:
    """Answers "429" on its first attempt (RateLimited), then succeeds: the attempt must not be counted."""
    if _redis().incr(f"test:partner:{n}") == 1:
        raise taskqueue.RateLimited(retry_after=0.3)
    return taskqueue.current_task().attempt


def reporting(n: int, gate: str = "test:gate") -> int:
    """Says it is half way, then waits at the gate like gated()."""
    taskqueue.current_task().progress(0.5, "half way")
    return gated(n, gate)


def interpreter(module: str = "msgpack") -> dict[str, str]:
    """Which Python runs this worker, and from which file it imports `module` (a compiled one by default)."""
    imported = importlib.import_module(module)
    return {"python": platform.python_version(), "executable": sys.executable, "module": str(imported.__file__)}


def loaded(names: list[str]) -> list[str]:
    """Which of these top-level modules the worker process running this task has imported."""
    return sorted(name for name in names if name in sys.modules)


def record_pid(n: int, sleep_s: float = 0.0) -> int:
    """Sync: count one run of item n and which worker process ran it (test:pids: pid -> runs)."""
    if sleep_s:
        time.sleep(sleep_s)
    client = _redis()  # held while the pipeline runs: a client lost to the cache's first-call race closes its pool
    pipe = client.pipeline(transaction=False)
    pipe.hincrby("test:runs", str(n), 1)
    pipe.hincrby("test:pids", str(os.getpid()), 1)
    pipe.execute()
    return n


_HOARD: list[bytes] = []


def hog(n: int, mib: int, sleep_s: float = 0.0) -> int:
    """Keep `mib` MiB alive in this process for good (a leak: its RSS grows), then count it like record_pid."""
    _HOARD.append(b"\x01" * (mib << 20))  # written, not calloc'd: the pages are resident
    return record_pid(n, sleep_s)
