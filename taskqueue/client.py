"""The tiny client: enqueue tasks and read results. Needs only `redis` and `msgpack`.

    from taskqueue.client import Client
    c = Client("redis://127.0.0.1:6379/0")
    task_id = c.enqueue("send_email", to="a@example.com")
    c.result(task_id, timeout=10)

Routing comes from the task table the runner publishes in Redis; the client never reads the YAML. Both
clients are thin shells around the one producer (`taskqueue.producer`): they differ only in the await.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgpack
import redis

from taskqueue import canvas
from taskqueue.canvas import Flow, chain, chord, group, step
from taskqueue.errors import ResultTimeout, TaskCancelled, TaskFailed, TaskQueueError
from taskqueue.store import eventlog, lookup, scripts
from taskqueue.store.connection import DirectConnection, RedisOptions, async_client, sync_client
from taskqueue.store.keys import Keys
from taskqueue.store.producer import Call, Producer, Routes, Sender

__all__ = ["AsyncClient", "Call", "Client", "chain", "chord", "group", "step"]
_POLL_S = (0.002, 0.1)  # result(): first and longest pause between two looks


def _seconds(delay: float | dt.timedelta | None) -> float:
    if delay is None:
        return 0.0
    return delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)


def _scripts(client: Any) -> dict[str, Any]:
    names = ("enqueue", "schedule", "workflow", "unique", "evented", *lookup.SCRIPTS)
    return {name: client.register_script(scripts.source(name)) for name in names}


def _deployment(path: str | os.PathLike[str]) -> tuple[RedisOptions, str]:
    """The Redis options and key prefix of the deployment a YAML describes, read as the runner reads them
    (`${VAR}` expansion, REDIS_URL and the other overrides, defaults); its tasks are not imported."""
    try:
        from taskqueue.config import load
        from taskqueue.store.redisboot import options

        config = load(path, import_tasks=False)  # imports the YAML reader and the schema's checker
    except ImportError as exc:
        raise TaskQueueError(
            f"from_config() reads the YAML with the runner's dependencies ({exc.name or exc} is missing): "
            "pip install 'taskqueue[runner]', or pass the URL: Client(url, key_prefix=...)"
        ) from None
    return options(config), config.redis.key_prefix


def _options(found: RedisOptions) -> dict[str, Any]:
    return {
        "pool_size": found.pool_size,
        "connection_timeout": found.connection_timeout,
        "command_timeout": found.command_timeout,
        "cluster": found.cluster,
        "sentinel": found.sentinel,
        "tls": found.tls,
    }


def _pauses(task_id: str, timeout: float) -> Iterator[float]:
    """The waits of result() after each look: growing from 2 ms to 100 ms until the deadline; one last look
    at the deadline (a pause of 0), then ResultTimeout."""
    deadline = time.monotonic() + timeout
    pause = _POLL_S[0]
    while (left := deadline - time.monotonic()) > 0:
        yield min(pause, left)
        pause = min(pause * 2, _POLL_S[1])
    yield 0.0
    raise ResultTimeout(f"no result for task {task_id} within {timeout}s")


def _outcome(task_id: str, raw: bytes) -> Any:
    body = msgpack.unpackb(raw, raw=False)
    if body.get("status") == "cancelled":
        raise TaskCancelled(f"task {task_id} was cancelled")
    if body.get("status") != "ok":
        raise TaskFailed(f"task {task_id} failed: {body.get('error')}")
    if body.get("error"):
        raise TaskFailed(f"task {task_id}: {body['error']}")
    return body.get("value")


class _Base:
    """What both clients share: key names and the one producer, with the routes the runner published."""

    def __init__(self, key_prefix: str) -> None:
        self.keys = Keys(key_prefix)
        self.producer = Producer(self.keys, Routes(source=self.keys.tasks))

    def _load(self, tables: Sequence[Mapping[bytes, bytes]]) -> None:
        self.producer.routes = Routes.from_tables(tables[0], tables[1], self.keys.tasks)

    def _plan(
        self,
        calls: Sequence[Call],
        queue: str | None,
        delay: float | dt.timedelta | None,
        task_id: str | None,
        unique_key: str | None = None,
    ) -> tuple[list[str], Any]:
        return self.producer.plan(calls, queue=queue, delay_s=_seconds(delay), task_id=task_id, unique_key=unique_key)

    def _unknown(self, calls: Sequence[Call]) -> bool:
        return any(name not in self.producer.routes.tasks for name, _, _ in calls)

    def _result_ttl(self, task: str) -> float:
        route = self.producer.routes.tasks.get(task)
        return route.result_ttl_s if route else 3600.0

    def _unknown_in(self, flow: Flow) -> bool:
        return any(part.task not in self.producer.routes.tasks for part, _ in canvas.lay_out(flow).steps)


class _DirectConnection:
    """One connection of the client's pool, used directly for the plain LPUSH of an enqueue: it skips redis-py's
    per-command pool checkout and instrumentation, about half the client-side cost of an enqueue. Any
    connection trouble hands the call back to the regular path (which reconnects and retries)."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.lock = threading.Lock()
        self.conn: Any = None
        self.pid = 0

    def lpush(self, key: str, *messages: bytes) -> bool:
        """True when the LPUSH ran here; False: use the regular client. An error reply of Redis raises."""
        if not self.lock.acquire(blocking=False):
            return False  # another thread has it: no waiting on the hot path
        try:
            if self.conn is None or self.pid != os.getpid():
                self.conn, self.pid = self.pool.make_connection(), os.getpid()
            try:
                self.conn.send_packed_command(self.conn.pack_command("LPUSH", key, *messages), check_health=False)
                reply = self.conn.read_response()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.conn.disconnect()
                return False
            return reply is not None
        finally:
            self.lock.release()


class Client(_Base):
    """Synchronous producer. Keyword arguments are the YAML `redis:` options."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "tq", **options: Any) -> None:
        super().__init__(key_prefix)
        self.redis: Any = sync_client(RedisOptions(url=url, **options))
        # Plain pools only: a Sentinel connection used outside its pool connects to localhost:6379 (redis-py's
        # send_packed_command skips SentinelManagedConnection.connect), not to the primary.
        plain = type(self.redis) is redis.Redis and type(self.redis.connection_pool) is redis.ConnectionPool
        direct = _DirectConnection(self.redis) if plain else None
        self._scripts = _scripts(self.redis)
        self._sender = Sender(self.redis, self._scripts, direct.lpush if direct else None)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] = "task-queue.yaml") -> Client:
        """A client for the deployment `path` describes: its `redis:` section (URL, key_prefix, TLS, Cluster,
        Sentinel) as the runner reads it. Needs PyYAML and jsonschema (`pip install 'taskqueue[runner]'`)."""
        found, prefix = _deployment(path)
        return cls(found.url, key_prefix=prefix, **_options(found))

    def refresh(self) -> None:
        """Re-read the task table (after the runner's YAML changed)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.tasks)
        pipe.hgetall(self.keys.queues)
        self._load(pipe.execute())

    def enqueue(
        self,
        task: str,
        *args: Any,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue one task (one round trip); returns its id. Raises QueueFull, UnknownTask, PayloadTooLarge.
        A task with `unique_for` (or a call with `unique_key`) that equals one already queued, delayed or
        running is not enqueued again: the id returned is that task's."""
        return self.enqueue_call(task, args, kwargs, queue=queue, delay=delay, task_id=task_id, unique_key=unique_key)

    def enqueue_call(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        unique_key: str | None = None,
    ) -> str:
        """Like enqueue(), for kwargs named `queue`, `delay`, `task_id` or `unique_key`."""
        return self._enqueue([(task, args, kwargs or {})], queue, delay, task_id, unique_key)[0]

    def enqueue_many(
        self, calls: Iterable[Call], *, queue: str | None = None, delay: float | dt.timedelta | None = None
    ) -> list[str]:
        """Enqueue (task, args, kwargs) triples with one round trip per queue; returns their ids."""
        return self._enqueue(list(calls), queue, delay, None)

    def _enqueue(
        self,
        calls: list[Call],
        queue: str | None,
        delay: float | dt.timedelta | None,
        task_id: str | None,
        unique_key: str | None = None,
    ) -> list[str]:
        if self._unknown(calls):
            self.refresh()
        ids, pushes = self._plan(calls, queue, delay, task_id, unique_key)
        self._sender.send(pushes, ids)
        return ids

    def enqueue_workflow(self, flow: Flow) -> str:
        """Start a workflow (`step`, `chain`, `group`, `chord`); returns its id, for result() and workflow()."""
        if self._unknown_in(flow):
            self.refresh()
        workflow_id, push = self.producer.workflow(flow)
        self._sender.send([push])
        return workflow_id

    def workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """{"id", "state", "steps": [{"index", "id", "task", "state"}, ...]}, or None when unknown; a step's
        state is pending, queued, running, succeeded, failed or cancelled."""
        found: dict[str, Any] | None = lookup.run(lookup.workflow(self.keys, workflow_id), self.redis, self._scripts)
        return found

    def status(self, task_id: str) -> dict[str, Any] | None:
        """Where the task is and what it does: {"id", "task", "state", "queue", "attempt", "progress",
        "waiting", ...} with state queued, delayed, waiting (held by a limit: "waiting" says which and until
        when), running, succeeded, failed or cancelled; None when unknown (or its result expired)."""
        found: dict[str, Any] | None = lookup.run(lookup.status(self.keys, task_id), self.redis, self._scripts)
        return found

    def cancel(self, task_id: str) -> str:
        """Cancel a task or a workflow: "cancelled" (it will not start), "cancelling" (it is running: it is
        stopped), "already_cancelled" (cancelled before), or "not_found" (unknown or finished: nothing is
        recorded). result() then raises TaskCancelled."""
        answer: str = lookup.run(lookup.cancel(self.keys, task_id, self._result_ttl), self.redis, self._scripts)
        return answer

    def result(self, task_id: str, timeout: float = 10.0) -> Any:
        """Wait for a task's stored result; raises TaskFailed if it was dead-lettered (TaskCancelled if it
        was cancelled), ResultTimeout."""
        for pause in _pauses(task_id, timeout):
            raw = self.redis.get(self.keys.result(task_id))
            if raw is not None:
                return _outcome(task_id, raw)
            time.sleep(pause)
        raise AssertionError("unreachable: _pauses raises at the deadline")

    def close(self) -> None:
        self.redis.close()


class AsyncClient(_Base):
    """asyncio producer with the same methods as Client (awaitable)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "tq", **options: Any) -> None:
        super().__init__(key_prefix)
        self.redis: Any = async_client(RedisOptions(url=url, **options), retry=True)
        self._direct = DirectConnection(self.redis) if DirectConnection.possible(self.redis) else None
        self._scripts = _scripts(self.redis)
        self._sender = Sender(self.redis, self._scripts, self._lpush_direct if self._direct else None)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] = "task-queue.yaml") -> AsyncClient:
        """Like Client.from_config()."""
        found, prefix = _deployment(path)
        return cls(found.url, key_prefix=prefix, **_options(found))

    async def refresh(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.tasks)
            pipe.hgetall(self.keys.queues)
            self._load(await pipe.execute())

    async def enqueue(
        self,
        task: str,
        *args: Any,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> str:
        return await self.enqueue_call(
            task, args, kwargs, queue=queue, delay=delay, task_id=task_id, unique_key=unique_key
        )

    async def enqueue_call(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        unique_key: str | None = None,
    ) -> str:
        return (await self._enqueue([(task, args, kwargs or {})], queue, delay, task_id, unique_key))[0]

    async def enqueue_many(
        self, calls: Iterable[Call], *, queue: str | None = None, delay: float | dt.timedelta | None = None
    ) -> list[str]:
        return await self._enqueue(list(calls), queue, delay, None)

    async def _enqueue(
        self,
        calls: list[Call],
        queue: str | None,
        delay: float | dt.timedelta | None,
        task_id: str | None,
        unique_key: str | None = None,
    ) -> list[str]:
        if self._unknown(calls):
            await self.refresh()
        ids, pushes = self._plan(calls, queue, delay, task_id, unique_key)
        await self._sender.asend(pushes, ids)
        return ids

    async def _lpush_direct(self, key: str, *messages: bytes) -> bool:
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

    async def enqueue_workflow(self, flow: Flow) -> str:
        if self._unknown_in(flow):
            await self.refresh()
        workflow_id, push = self.producer.workflow(flow)
        await self._sender.asend([push])
        return workflow_id

    async def workflow(self, workflow_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await lookup.arun(
            lookup.workflow(self.keys, workflow_id), self.redis, self._scripts
        )
        return found

    async def status(self, task_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await lookup.arun(lookup.status(self.keys, task_id), self.redis, self._scripts)
        return found

    async def cancel(self, task_id: str) -> str:
        cancelling = lookup.cancel(self.keys, task_id, self._result_ttl)
        answer: str = await lookup.arun(cancelling, self.redis, self._scripts)
        return answer

    async def result(self, task_id: str, timeout: float = 10.0) -> Any:
        for pause in _pauses(task_id, timeout):
            raw = await self.redis.get(self.keys.result(task_id))
            if raw is not None:
                return _outcome(task_id, raw)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable: _pauses raises at the deadline")

    def events(
        self, group: str, consumer: str, *, start: str = "0", batch: int = 100, block_s: float = 5.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The lifecycle events (SPEC §13) as an endless async iterator with a durable cursor: consumer group
        `group` of the events stream (created at `start`: "0" = from the oldest kept, "$" = only new ones),
        read as `consumer`. Each event is acknowledged when the next one is asked for, so an event whose
        handling did not finish (the process died) comes again to this consumer when it restarts; consumers
        of one group share the events. Each is a dict of the entry's fields (`event`, `id`, `task`, `queue`,
        `attempt`, `at`, and `error` / `workflow` / `state` where they apply) plus `stream_id`.

            async for event in client.events(group="billing", consumer="billing-1"):
                if event["event"] == "succeeded": ...
        """
        return eventlog.follow_group(
            self.redis, self.keys.events, group, consumer, start=start, batch=batch, block_ms=int(block_s * 1000)
        )

    async def aclose(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self.redis.aclose()
