"""One worker process: take as many tasks as it has free slots, run them, settle them, keep its lease alive."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import os
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.exceptions import RedisError

from taskqueue import envelope as envelope_mod
from taskqueue import stats
from taskqueue.broker import HOST, Broker, DeadRecord, Taken, due_ms
from taskqueue.config import Config, TaskConfig
from taskqueue.context import TaskContext, set_current
from taskqueue.errors import Reject, Retry
from taskqueue.keys import split_member
from taskqueue.loop import raise_if_cancelled
from taskqueue.registry import RegisteredTask, Registry
from taskqueue.stats import field as stat_field

log = logging.getLogger("taskqueue.worker")

EXIT_REPLACE = 75  # "replace me": a sync task overran its timeout and its thread cannot be stopped
WATCH_BLOCK_S = 2.0
STOP_WAIT_S = 2.0  # how long cancelled coroutines get to finish at shutdown
LEASE_HEARTBEATS = 3  # a worker silent for this many heartbeat intervals is presumed dead


@dataclass(slots=True)
class _Held:
    queue: str
    raw: bytes
    job: asyncio.Task[None] | None = None


def lease_s(config: Config) -> float:
    return config.workers.heartbeat_interval_s * LEASE_HEARTBEATS


def backoff_s(task: TaskConfig, attempt: int) -> float:
    """Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped; equal jitter keeps half of it."""
    policy = task.retry_backoff
    delay = min(policy.max_s, policy.base_s * (2 ** max(attempt - 1, 0)))
    return random.uniform(delay / 2, delay) if policy.jitter else delay


class Worker:
    def __init__(self, config: Config, registry: Registry, broker: Broker, watch: Any, worker_id: str) -> None:
        self.config = config
        self.registry = registry
        self.broker = broker
        self.watch = watch  # connections that may block (BLMOVE), apart from the broker's
        self.id = worker_id
        self.slots = config.workers.max_concurrent_tasks
        self.held: dict[bytes, _Held] = {}
        self.acks: list[bytes] = []
        self.results: list[tuple[str, int, bytes]] = []
        self.counters: collections.Counter[str] = collections.Counter()
        self.wake = asyncio.Event()
        self.armed = asyncio.Event()
        self.stopping = False
        self.exit_code = 0
        self.tokens = 0
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="task")
        self._signatures: dict[str, inspect.Signature | None] = {}
        self._pump_failed = False
        self._primary_moves = 0
        self._background: set[asyncio.Task[None]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, fast_stop: asyncio.Event) -> int:
        """Work until `stop`; then finish running tasks within the grace period and hand back the rest."""
        await self._heartbeat_once()
        helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._pump())]
        helpers += [asyncio.create_task(self._watch(q)) for q in self.broker.queue_names]
        self.armed.set()
        self.wake.set()
        await stop.wait()
        self.stopping = True
        self.wake.set()
        grace = self.config.workers.shutdown_grace_period_s if self.exit_code == 0 else 0.0
        running = [h.job for h in self.held.values() if h.job]
        if running:
            log.info("stopping: waiting up to %.1fs for %d running task(s)", grace, len(running))
            # until every running task is done, the grace period is over, or a second signal says hurry
            finished = asyncio.create_task(asyncio.wait(running))
            fast = asyncio.create_task(fast_stop.wait())
            await asyncio.wait([finished, fast], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            fast.cancel()
        await self._hand_back()
        for helper in helpers:
            helper.cancel()
        await asyncio.wait(helpers, timeout=STOP_WAIT_S)
        await self._flush()
        await self.broker.redis.zrem(self.broker.keys.workers, self.id)
        await self.broker.forget_worker(self.id)
        log.info("worker stopped", extra={"worker": self.id})
        return self.exit_code

    async def _hand_back(self) -> None:
        """Cancel what still runs and put its messages back at the front of their queues."""
        jobs = [h.job for h in self.held.values() if h.job and not h.job.done()]
        for job in jobs:
            job.cancel(msg="hand back")
        if jobs:  # a task body may swallow its cancellation: do not wait for it forever
            await asyncio.wait(jobs, timeout=STOP_WAIT_S)
        for token, held in list(self.held.items()):
            try:
                await self.broker.requeue(self.id, token, held.queue, held.raw)
                log.info("handed back a task that was still running", extra={"queue": held.queue})
            except RedisError as exc:
                log.warning("could not hand back a task (%s); it returns when this worker's lease expires", exc)
            self.held.pop(token, None)

    async def _heartbeat_once(self) -> None:
        info = {
            "host": HOST,
            "pid": os.getpid(),
            "slots": self.slots,
            "active": len(self.held),
            "started": getattr(self, "_started", time.time()),
            "runner_pid": os.getppid(),
        }
        self._started = info["started"]
        await self.broker.heartbeat(self.id, info, lease_s(self.config))

    async def _heartbeat(self) -> None:
        parent = os.getppid()
        interval = self.config.workers.heartbeat_interval_s
        while True:
            raise_if_cancelled()
            await asyncio.sleep(min(interval, 0.5) if parent != 1 else interval)
            if os.getppid() != parent:
                log.warning("the runner process went away: stopping")
                os.kill(os.getpid(), 15)
                return
            if time.monotonic() - getattr(self, "_beat_at", 0.0) < interval:
                continue
            try:
                await self._heartbeat_once()
                self._beat_at = time.monotonic()
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    # ---- taking work -------------------------------------------------------------------------------
    async def _watch(self, queue: str) -> None:
        """Block on one ready list without taking anything (BLMOVE q q: a no-op move) until it has work."""
        key = self.broker.keys.queue(queue)
        while True:
            raise_if_cancelled()
            await self.armed.wait()
            try:
                found = await self.watch.blmove(key, key, WATCH_BLOCK_S, "RIGHT", "RIGHT")
            except RedisError:
                await asyncio.sleep(0.5)
                found = True  # let the pump find out whether Redis is back
            if found is not None:
                self.armed.clear()
                self.wake.set()

    async def _pump(self) -> None:
        """The worker's single conversation about task state: ack, count, take (one round trip each time)."""
        delay = 0.05
        while True:
            raise_if_cancelled()
            await self.wake.wait()
            self.wake.clear()
            want = 0 if self.stopping else self.slots - len(self.held)
            if want <= 0 and not (self.acks or self.counters or self.results):
                continue
            try:
                taken = await self._exchange(want)
                for item in taken:  # held before any reconcile: they are ours, not strays
                    self._start(item)
                delay = 0.05
                moves = getattr(getattr(self.broker.redis, "connection_pool", None), "primary_changes", 0)
                if self._pump_failed or moves != self._primary_moves:  # a Sentinel failover may lose replies too
                    self._pump_failed, self._primary_moves = False, moves
                    await self._reconcile()
            except RedisError as exc:
                if not self._pump_failed:
                    log.warning("Redis unavailable (%s); retrying with backoff", exc)
                self._pump_failed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self.wake.set()
                continue
            if want > 0 and len(taken) < want:
                self.armed.set()  # queues ran dry: let the watchers tell us when work arrives

    async def _exchange(self, want: int) -> list[Taken]:
        acks, counters, results = self.acks, dict(self.counters), self.results
        self.acks, self.results = [], []
        self.counters.clear()
        base = self.tokens
        self.tokens += want
        try:
            return await self.broker.exchange(self.id, acks, counters, results, want, base)
        except BaseException:
            self.acks = acks + self.acks  # not settled yet: keep them for the next round
            self.results = results + self.results
            self.counters.update(counters)
            raise

    async def _flush(self) -> None:
        if self.acks or self.counters or self.results:
            try:
                await self._exchange(0)
            except RedisError as exc:
                log.warning("could not record %d finished task(s): %s", len(self.acks), exc)

    async def _reconcile(self) -> None:
        """After a failed round trip, hand back messages Redis recorded for us that we never received
        (the script ran but its reply was lost). Finished tasks whose ack is still pending are ours."""
        for token, member in (await self.broker.inflight(self.id)).items():
            # checked now, not before an await: a task may finish (its ack still pending) at any await
            if token not in self.held and token not in self.acks:
                queue, raw = split_member(member)
                await self.broker.requeue(self.id, token, queue, raw)

    def _start(self, item: Taken) -> None:
        held = _Held(item.queue, item.raw)
        self.held[item.token] = held
        held.job = asyncio.create_task(self._process(item))
        held.job.add_done_callback(functools.partial(self._job_done, item.token))

    def _job_done(self, token: bytes, job: asyncio.Task[None]) -> None:
        """A job that ended without settling its message (a bug, or an error we did not foresee) must not
        keep its slot forever: hand the message back, so it runs again, and say why."""
        if job.cancelled() or token not in self.held or self.held[token].job is not job:
            return
        log.error("a task's bookkeeping failed; its message is handed back", exc_info=job.exception())
        held = self.held.pop(token)
        self._spawn(self._give_back(token, held))

    async def _give_back(self, token: bytes, held: _Held) -> None:
        delay = 0.1
        while True:
            raise_if_cancelled()
            try:
                await self.broker.requeue(self.id, token, held.queue, held.raw)
                break
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    # ---- running one task ----------------------------------------------------------------------
    async def _process(self, item: Taken) -> None:
        try:
            env = envelope_mod.decode(item.raw, self.config.max_payload_bytes)
        except envelope_mod.InvalidEnvelope as exc:
            await self._bury(item, None, f"invalid message: {exc}", "", 1)
            return
        task = self.registry.get(env.task)
        if task is None:
            known = ", ".join(sorted(self.registry.tasks))
            await self._bury(item, env, f"unknown task '{env.task}' (declared: {known})", "", env.attempt + 1)
            return
        await self._attempt(item, env, task)

    async def _attempt(self, item: Taken, env: envelope_mod.Envelope, task: RegisteredTask) -> None:
        attempt = env.attempt + 1
        timeout = env.timeout or task.config.timeout_s
        context = TaskContext(
            env.id,
            task.name,
            item.queue,
            attempt,
            env.max_retries if env.max_retries is not None else task.config.max_retries,
        )
        set_current(context)
        started = time.monotonic()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if task.is_async:
                    value = await task.call(env.args, env.kwargs)
                else:
                    value = await self._run_sync(task, env)
        except asyncio.CancelledError:
            raise  # hand back: the shutdown path requeues the message
        except Exception as error:
            elapsed = time.monotonic() - started
            self._observe(item.queue, task.name, elapsed)
            failure: Exception = error
            if deadline.expired():
                if not task.is_async:
                    self.exit_code = EXIT_REPLACE  # a thread cannot be stopped: this process is replaced
                failure = _Overrun()
            elif isinstance(error, TypeError) and (mismatch := self._bind_problem(task, env)):
                await self._bury(item, env, mismatch, "", attempt)  # checked only on failure: off the hot path
                return
            await self._failed(item, env, task, context, failure, timeout, elapsed)
        else:
            elapsed = time.monotonic() - started
            self._observe(item.queue, task.name, elapsed)
            self._succeed(item, env, task, value)
            if log.isEnabledFor(logging.DEBUG):
                fields = {"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": attempt}
                log.debug("task done", extra={**fields, "duration_ms": round(elapsed * 1000, 2)})

    def _observe(self, queue: str, task: str, seconds: float) -> None:
        bucket, total, micros = stats.duration_fields(queue, task, seconds)
        self.counters[bucket] += 1
        self.counters[total] += micros

    async def _failed(
        self,
        item: Taken,
        env: envelope_mod.Envelope,
        task: RegisteredTask,
        context: TaskContext,
        exc: Exception,
        timeout: float,
        elapsed: float,
    ) -> None:
        fields = {
            "task_id": env.id,
            "task": task.name,
            "queue": item.queue,
            "attempt": context.attempt,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if isinstance(exc, Reject):
            await self._bury(item, env, f"rejected: {exc.reason}", "", context.attempt)
        elif isinstance(exc, Retry):
            await self._fail(item, env, task, context, f"retry requested: {exc.reason}", "", exc.delay)
        elif isinstance(exc, _Overrun):
            log.warning("task timed out after %.3gs", timeout, extra=fields)
            await self._fail(item, env, task, context, f"timed out after {timeout:g}s", "", None)
        else:
            trace = "".join(traceback.format_exception(exc, limit=20))
            log.warning("task failed: %s: %s", type(exc).__name__, exc, extra=fields)
            await self._fail(item, env, task, context, f"{type(exc).__name__}: {exc}", trace, None)

    async def _run_sync(self, task: RegisteredTask, env: envelope_mod.Envelope) -> Any:
        ctx = contextvars.copy_context()  # carries current_task() into the thread
        return await asyncio.get_running_loop().run_in_executor(self.pool, ctx.run, task.call, env.args, env.kwargs)

    def _succeed(self, item: Taken, env: envelope_mod.Envelope, task: RegisteredTask, value: Any) -> None:
        del self.held[item.token]
        self.acks.append(item.token)
        self.counters[stat_field("processed", item.queue, task.name)] += 1
        ttl_ms = int(task.config.result_ttl_s * 1000)
        if ttl_ms > 0:
            self.results.append((env.id, ttl_ms, _result_bytes("ok", value, None)))
        self.wake.set()

    async def _fail(
        self,
        item: Taken,
        env: envelope_mod.Envelope,
        task: RegisteredTask,
        context: TaskContext,
        error: str,
        trace: str,
        delay: float | None,
    ) -> None:
        attempt = context.attempt
        if attempt > context.max_retries:
            await self._bury(item, env, error, trace, attempt)
        else:
            wait = backoff_s(task.config, attempt) if delay is None else delay
            env.attempt = attempt
            counted = [
                stat_field("failed", item.queue, task.name),
                stat_field("retried", item.queue, task.name),
            ]
            message, due = env.encode(), due_ms(wait)
            await self._settle(
                item.token, lambda: self.broker.retry(self.id, item.token, item.queue, message, due, counted)
            )
            log.info(
                "retry in %.3gs",
                wait,
                extra={"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": attempt},
            )
        if self.exit_code == EXIT_REPLACE:
            os.kill(os.getpid(), 15)  # a stuck thread: stop taking work and let the runner replace us

    async def _bury(
        self, item: Taken, env: envelope_mod.Envelope | None, error: str, trace: str, attempts: int
    ) -> None:
        name = env.task if env else "(invalid)"
        task_id = env.id if env else f"invalid-{self.id}-{item.token.decode()}"
        raw = envelope_mod.preview(item.raw, 64 * 1024)
        record = DeadRecord(
            task_id,
            name,
            item.queue,
            raw,
            len(raw) < len(item.raw),
            error,
            trace,
            attempts,
            env.enqueued_at if env else None,
            time.time(),
            self.id,
        )
        counted = [stat_field("failed", item.queue, name), stat_field("dead", item.queue, name)]
        log.warning(
            "dead-lettered: %s",
            error,
            extra={"task_id": task_id, "task": name, "queue": item.queue, "attempt": attempts},
        )
        await self._settle(item.token, lambda: self.broker.bury(self.id, item.token, record, counted))
        ttl = self.registry.get(name)
        if env and ttl and ttl.config.result_ttl_s > 0:
            self.results.append((env.id, int(ttl.config.result_ttl_s * 1000), _result_bytes("dead", None, error)))
            self.wake.set()

    async def _settle(self, token: bytes, script: Callable[[], Awaitable[bool]]) -> None:
        """Run a retry/bury script, riding out a Redis outage; the message stays held until it lands."""
        delay = 0.1
        while True:
            raise_if_cancelled()
            try:
                await script()
                break
            except RedisError as exc:
                log.warning("Redis unavailable while settling a task (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.held.pop(token, None)
        self.wake.set()

    def _bind_problem(self, task: RegisteredTask, env: envelope_mod.Envelope) -> str | None:
        if task.name not in self._signatures:
            try:
                signature: inspect.Signature | None = inspect.signature(task.target)  # a class: its __init__
            except (TypeError, ValueError):
                signature = None
            self._signatures[task.name] = signature
        signature = self._signatures[task.name]
        if signature is None:
            return None
        try:
            signature.bind(*env.args, **env.kwargs)
        except TypeError as exc:
            return f"arguments do not match {task.name}{signature}: {exc}"
        return None


class _Overrun(Exception):
    """An attempt ran past its timeout."""


def _result_bytes(status: str, value: Any, error: str | None) -> bytes:
    body = {"status": status, "value": value, "error": error, "finished_at": time.time()}
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        body.update(value=None, error=f"result not serialisable: {type(exc).__name__}: {exc}")
        packed = msgpack.packb(body, use_bin_type=True)
    return packed
