"""The tiny client: enqueue tasks and read results. Needs only `redis` and `msgpack`.

    from taskqueue.client import Client
    c = Client("redis://127.0.0.1:6379/0")
    task_id = c.enqueue("send_email", to="a@example.com")
    c.result(task_id, timeout=10)

Routing comes from the task table the runner publishes in Redis; the client never reads the YAML.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack
import redis

from taskqueue import envelope, scripts
from taskqueue.connection import DirectConnection, RedisOptions, async_client, sync_client
from taskqueue.errors import PayloadTooLarge, QueueFull, ResultTimeout, TaskFailed, UnknownTask
from taskqueue.keys import Keys, join_member

Call = tuple[str, Sequence[Any], Mapping[str, Any]]
_POLL_S = (0.002, 0.1)  # result(): first and longest pause between two looks


def _seconds(delay: float | dt.timedelta | None) -> float:
    if delay is None:
        return 0.0
    return delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)


class _Routing:
    """What both clients share: the task/queue tables, message building, and key names."""

    def __init__(self, key_prefix: str) -> None:
        self.keys = Keys(key_prefix)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}

    def _load(self, tasks: Mapping[bytes, bytes], queues: Mapping[bytes, bytes]) -> None:
        self.tasks = {k.decode(): msgpack.unpackb(v) for k, v in tasks.items()}
        self.queues = {k.decode(): msgpack.unpackb(v) for k, v in queues.items()}

    def _route(self, name: str, queue: str | None) -> str:
        info = self.tasks.get(name)
        if info is None:
            if not self.tasks:
                raise UnknownTask(
                    f"no task table at {self.keys.tasks}: start the runner once so clients can route by task name"
                )
            raise UnknownTask(f"unknown task '{name}' (declared: {', '.join(sorted(self.tasks))})")
        chosen = queue or str(info["queue"])
        if chosen not in self.queues:
            raise UnknownTask(f"unknown queue '{chosen}' (declared: {', '.join(sorted(self.queues))})")
        return chosen

    def _build(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], task_id: str | None, now: float = 0.0
    ) -> tuple[str, bytes]:
        task_id = task_id or envelope.new_id()
        message = envelope.pack(name, task_id, args, kwargs, now or round(time.time(), 6))
        limit = self.tasks[name].get("max_payload")
        if limit and len(message) > limit:
            raise PayloadTooLarge(f"task '{name}': message of {len(message)} bytes exceeds {limit} bytes")
        return task_id, message

    def _plan(self, calls: Iterable[Call], queue: str | None) -> tuple[list[str], dict[str, list[bytes]]]:
        ids: list[str] = []
        by_queue: dict[str, list[bytes]] = {}
        now = round(time.time(), 6)  # one timestamp for the batch
        for name, args, kwargs in calls:
            target = self._route(name, queue)
            task_id, message = self._build(name, args, kwargs, None, now)
            ids.append(task_id)
            by_queue.setdefault(target, []).append(message)
        return ids, by_queue

    def _delayed_args(self, queue: str, messages: Sequence[bytes], delay_s: float) -> list[Any]:
        due = math.ceil((time.time() + delay_s) * 1000)  # rounded up: never due before its time
        argv: list[Any] = [self.keys.delayed_wake]
        for message in messages:
            argv += (due, join_member(queue, message))
        return argv

    @staticmethod
    def _outcome(task_id: str, raw: bytes) -> Any:
        body = msgpack.unpackb(raw, raw=False)
        if body.get("status") != "ok":
            raise TaskFailed(f"task {task_id} failed: {body.get('error')}")
        if body.get("error"):
            raise TaskFailed(f"task {task_id}: {body['error']}")
        return body.get("value")


class _DirectConnection:
    """One connection of the client's pool, used directly for the plain LPUSH of an enqueue: it skips redis-py's
    per-command pool checkout and instrumentation, about half the client-side cost of an enqueue. Any
    connection trouble hands the call back to the regular path (which reconnects and retries)."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.lock = threading.Lock()
        self.conn: Any = None
        self.pid = 0

    def command(self, *args: Any) -> bool:
        """True when the command ran here; False: use the regular client. An error reply of Redis raises."""
        if not self.lock.acquire(blocking=False):
            return False  # another thread has it: no waiting on the hot path
        try:
            if self.conn is None or self.pid != os.getpid():
                self.conn, self.pid = self.pool.make_connection(), os.getpid()
            try:
                self.conn.send_packed_command(self.conn.pack_command(*args), check_health=False)
                reply = self.conn.read_response()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.conn.disconnect()
                return False
            return reply is not None
        finally:
            self.lock.release()


class Client(_Routing):
    """Synchronous producer. Keyword arguments are the YAML `redis:` options."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "tq", **options: Any) -> None:
        super().__init__(key_prefix)
        self.redis: Any = sync_client(RedisOptions(url=url, **options))
        self._enqueue_script = self.redis.register_script(scripts.source("enqueue"))
        self._schedule_script = self.redis.register_script(scripts.source("schedule"))
        # Plain pools only: a Sentinel connection used outside its pool connects to localhost:6379 (redis-py's
        # send_packed_command skips SentinelManagedConnection.connect), not to the primary.
        plain = type(self.redis) is redis.Redis and type(self.redis.connection_pool) is redis.ConnectionPool
        self._direct = _DirectConnection(self.redis) if plain else None

    def refresh(self) -> None:
        """Re-read the task table (after the runner's YAML changed)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.tasks)
        pipe.hgetall(self.keys.queues)
        self._load(*pipe.execute())

    def _ensure(self, name: str) -> None:
        if name not in self.tasks:
            self.refresh()

    def enqueue(
        self,
        task: str,
        *args: Any,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue one task (one round trip); returns its id. Raises QueueFull, UnknownTask, PayloadTooLarge."""
        return self.enqueue_call(task, args, kwargs, queue=queue, delay=delay, task_id=task_id)

    def enqueue_call(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
    ) -> str:
        """Like enqueue(), for kwargs named `queue`, `delay` or `task_id`."""
        self._ensure(task)
        target = self._route(task, queue)
        new_id, message = self._build(task, args, kwargs or {}, task_id)
        self._push(target, [message], _seconds(delay))
        return new_id

    def enqueue_many(
        self, calls: Iterable[Call], *, queue: str | None = None, delay: float | dt.timedelta | None = None
    ) -> list[str]:
        """Enqueue (task, args, kwargs) triples with one round trip per queue; returns their ids."""
        calls = list(calls)
        for name, _, _ in calls:
            self._ensure(name)
        ids, by_queue = self._plan(calls, queue)
        for target, messages in by_queue.items():
            self._push(target, messages, _seconds(delay))
        return ids

    def _push(self, queue: str, messages: list[bytes], delay_s: float) -> None:
        if delay_s > 0:
            self._schedule_script(keys=[self.keys.delayed], args=self._delayed_args(queue, messages, delay_s))
            return
        limit = self.queues[queue].get("max_length")
        if limit is None:
            if self._direct is None or not self._direct.command("LPUSH", self.keys.queue(queue), *messages):
                self.redis.lpush(self.keys.queue(queue), *messages)
        elif self._enqueue_script(keys=[self.keys.queue(queue)], args=[limit, *messages]) < 0:
            raise QueueFull(f"queue '{queue}' is full (max_length {limit})")

    def result(self, task_id: str, timeout: float = 10.0) -> Any:
        """Wait for a task's stored result; raises TaskFailed if it was dead-lettered, ResultTimeout."""
        deadline = time.monotonic() + timeout
        pause = _POLL_S[0]
        while True:
            raw = self.redis.get(self.keys.result(task_id))
            if raw is not None:
                return self._outcome(task_id, raw)
            if time.monotonic() >= deadline:
                raise ResultTimeout(f"no result for task {task_id} within {timeout}s")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_S[1])

    def close(self) -> None:
        self.redis.close()


class AsyncClient(_Routing):
    """asyncio producer with the same methods as Client (awaitable)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "tq", **options: Any) -> None:
        super().__init__(key_prefix)
        self.redis: Any = async_client(RedisOptions(url=url, **options), retry=True)
        self._enqueue_script = self.redis.register_script(scripts.source("enqueue"))
        self._schedule_script = self.redis.register_script(scripts.source("schedule"))
        self._direct = DirectConnection(self.redis) if DirectConnection.possible(self.redis) else None

    async def refresh(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.tasks)
            pipe.hgetall(self.keys.queues)
            self._load(*(await pipe.execute()))

    async def enqueue(
        self,
        task: str,
        *args: Any,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        return await self.enqueue_call(task, args, kwargs, queue=queue, delay=delay, task_id=task_id)

    async def enqueue_call(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
    ) -> str:
        if task not in self.tasks:
            await self.refresh()
        target = self._route(task, queue)
        new_id, message = self._build(task, args, kwargs or {}, task_id)
        await self._push(target, [message], _seconds(delay))
        return new_id

    async def enqueue_many(
        self, calls: Iterable[Call], *, queue: str | None = None, delay: float | dt.timedelta | None = None
    ) -> list[str]:
        calls = list(calls)
        if any(name not in self.tasks for name, _, _ in calls):
            await self.refresh()
        ids, by_queue = self._plan(calls, queue)
        for target, messages in by_queue.items():
            await self._push(target, messages, _seconds(delay))
        return ids

    async def _push(self, queue: str, messages: list[bytes], delay_s: float) -> None:
        if delay_s > 0:
            await self._schedule_script(keys=[self.keys.delayed], args=self._delayed_args(queue, messages, delay_s))
            return
        limit = self.queues[queue].get("max_length")
        if limit is None:
            if not await self._lpush_direct(self.keys.queue(queue), messages):
                await self.redis.lpush(self.keys.queue(queue), *messages)
        elif await self._enqueue_script(keys=[self.keys.queue(queue)], args=[limit, *messages]) < 0:
            raise QueueFull(f"queue '{queue}' is full (max_length {limit})")

    async def _lpush_direct(self, key: str, messages: list[bytes]) -> bool:
        """LPUSH on the client's own connection; False: use the regular path (connection busy, or Redis away).
        A connection that went stale while idle (Redis restarted) is replaced once, at once."""
        direct = self._direct
        if direct is None or direct.busy:
            return False
        for _ in range(2):
            fresh = direct.conn is None
            try:
                return await direct.execute("LPUSH", key, *messages) is not None
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if fresh:
                    return False
        return False

    async def result(self, task_id: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        pause = _POLL_S[0]
        while True:
            raw = await self.redis.get(self.keys.result(task_id))
            if raw is not None:
                return self._outcome(task_id, raw)
            if time.monotonic() >= deadline:
                raise ResultTimeout(f"no result for task {task_id} within {timeout}s")
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_S[1])

    async def aclose(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self.redis.aclose()
