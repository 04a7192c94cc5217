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


def interpreter(module: str = "msgpack") -> dict[str, str]:
    """Which Python runs this worker, and from which file it imports `module` (a compiled one by default)."""
    imported = importlib.import_module(module)
    return {"python": platform.python_version(), "executable": sys.executable, "module": str(imported.__file__)}
