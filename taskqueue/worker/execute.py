"""Running the tasks a worker took: decode, call under the task's timeout, settle (ack, retry, dead letter).

The hot path for a task that succeeds is one asyncio Task and no Redis command of its own: the ack, the
counters and the result go into an outbox that the worker's pump sends in its next exchange. Timeouts
share one timer (armed for the earliest deadline) instead of one timer per task.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import os
import random
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from taskqueue import envelope as envelope_mod
from taskqueue import tracing
from taskqueue._loop import ride_out
from taskqueue.config import Config, TaskConfig
from taskqueue.config.registry import RegisteredTask, Registry
from taskqueue.context import set_current, set_progress_sink
from taskqueue.envelope import printable
from taskqueue.errors import PayloadTooLarge, RateLimited, Reject, Retry, UnknownTask
from taskqueue.features import Effect, Hooks
from taskqueue.features.events import Events
from taskqueue.features.limits import BeganLate, Gate, Limits, Start, on_time
from taskqueue.features.results import Results
from taskqueue.features.unique import Unique
from taskqueue.features.workflows import Workflows
from taskqueue.store import lookup, stats
from taskqueue.store.broker import Admission, Broker, DeadRecord, FailureRecord, Taken
from taskqueue.store.producer import WORKFLOW_ID_PREFIX
from taskqueue.store.stats import field as stat_field
from taskqueue.worker.threads import ThreadRunner

log = logging.getLogger("taskqueue.worker")

EXIT_REPLACE = 75  # "replace me": a sync task overran its timeout and its thread cannot be stopped
QUARANTINE_AFTER = 3  # bookkeeping failures of one message before it is dead-lettered as it is
TROUBLES_KEPT = 1000  # messages whose bookkeeping failures this process remembers
NO_DEADLINE = math.inf


@dataclass(slots=True)
class Held:
    """A message this worker holds (recorded in its in-flight hash) until it is settled or handed back."""

    queue: str
    raw: bytes
    job: asyncio.Task[None] | None = None
    deadline: float = NO_DEADLINE  # loop time; NO_DEADLINE once the task body has returned
    overran: bool = False
    task_id: str | None = None  # once decoded
    running: bool = False  # its body was called (a cancel stops it)
    cancelled: bool = False
    start: Start | None = None  # a task under a rate limit: its body begins on time or not at all (limits.py)
    late: bool = False  # ... and it would have: it did not begin


@dataclass(frozen=True, slots=True)
class _Names:
    """Counter fields of one (queue, task), built once."""

    processed: str
    buckets: tuple[str, ...]
    duration_total: str


def backoff_s(task: TaskConfig, attempt: int) -> float:
    """Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped; equal jitter keeps half of it."""
    policy = task.retry_backoff
    delay = min(policy.max_s, policy.base_s * (2 ** max(attempt - 1, 0)))
    return random.uniform(delay / 2, delay) if policy.jitter else delay


class Executor:
    """Runs taken messages; what they leave for Redis waits in `acks`, `counters` and `results`."""

    def __init__(self, config: Config, registry: Registry, broker: Broker, worker_id: str, wake: asyncio.Event) -> None:
        self.config = config
        self.registry = registry
        self.broker = broker
        self.worker_id = worker_id
        self.wake = wake  # set whenever the outbox has something for the pump, or a slot came free
        self.held: dict[bytes, Held] = {}
        self.acks: list[bytes] = []  # finished tokens whose settle has no effects: one HDEL for all
        self.hooked: list[tuple[bytes, list[Effect]]] = []  # finished tokens with their effects
        # Claims (worker.py `_watch`): started at once, recorded in the in-flight hash by the next exchange.
        # Until then no other script may touch their token (`_recorded`).
        self.claims: list[Taken] = []
        self.unclaims: list[tuple[str, bytes]] = []  # claimed with no slot free: back to the queue's front
        self._unrecorded: dict[bytes, asyncio.Event] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.exit_code = 0
        # what max_tasks_per_child counts: tasks settled here (acked, retried, rate limited by their body, or
        # dead-lettered); not messages that only waited (for a limit, or held back by a feature)
        self.finished = 0
        self.threads = ThreadRunner(config.workers.max_concurrent_tasks)
        self._names: dict[tuple[str, str], _Names] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = NO_DEADLINE
        self._background: set[asyncio.Task[None]] = set()
        self._troubles: dict[bytes, int] = {}  # message -> bookkeeping failures seen here
        self.cancelled: set[str] = set()  # ids cancelled in the last days (a copy of {p}:cancelled, see worker.py)
        self._progress: dict[str, dict[str, str]] = {}  # task id -> its latest progress, not yet written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.limits = Limits(broker.keys, worker_id)
        keys, max_len = broker.keys, config.events_cap
        self.workflows = Workflows(keys, max_len)
        # for a task not declared here: what its message still settles (its result, workflow, unique key)
        self.undeclared = (Results(keys), self.workflows, Unique(keys))
        self.hooks = Hooks([Results(keys), Events(keys, max_len), self.workflows, Unique(keys), self.limits])

    def attach(self) -> None:
        """Called on the worker's event loop before any task starts: tasks' progress comes here."""
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        set_progress_sink(self._progress_from_any_thread)

    def pending_outbox(self) -> bool:
        return bool(self.acks or self.counters or self.hooked or self.claims or self.unclaims)

    def claim(self, item: Taken) -> None:
        """Start a message a watcher moved into this worker's claim list; the next exchange records it."""
        self.claims.append(item)
        self._unrecorded[item.token] = asyncio.Event()
        self.wake.set()
        self.start(item)

    def recorded(self, claims: Iterable[Taken]) -> None:
        """The exchange that carried these claims succeeded: their tokens are in the in-flight hash now."""
        for item in claims:
            done = self._unrecorded.pop(item.token, None)
            if done is not None:
                done.set()

    async def _recorded(self, token: bytes) -> None:
        """Before a script of its own settles a claimed token: wait until the exchange recorded it."""
        done = self._unrecorded.get(token)
        if done is not None:
            self.wake.set()
            await done.wait()

    def unsent(self) -> set[bytes]:
        """Tokens that finished here and wait for the next exchange to be acknowledged."""
        return {*self.acks, *(token for token, _ in self.hooked)}

    # ---- starting ----------------------------------------------------------------------------------
    def start(self, item: Taken) -> None:
        held = Held(item.queue, item.raw)
        self.held[item.token] = held
        try:
            env = envelope_mod.decode(item.raw, self.config.max_payload_bytes)
        except Exception as exc:  # InvalidEnvelope, or a decoder bug: either way not a message we can run
            reason = str(exc) if isinstance(exc, envelope_mod.InvalidEnvelope) else f"{type(exc).__name__}: {exc}"
            ident = envelope_mod.identify(item.raw)
            held.job = asyncio.create_task(
                self._guard(item, held, self._bury(item, None, f"invalid message: {reason}", ident=ident))
            )
            return
        held.task_id = env.id
        if self.cancelled and env.id in self.cancelled:
            held.job = asyncio.create_task(self._guard(item, held, self._drop_cancelled(item, env)))
            return
        task = self.registry.get(env.task)
        if task is None and env.task in self.config.workflows:
            held.job = asyncio.create_task(self._guard(item, held, self._trigger(item, env)))
            return
        if task is None:
            known = ", ".join(sorted(self.registry.tasks))
            error = f"unknown task '{env.task}' (declared: {known})"
            held.job = asyncio.create_task(self._guard(item, held, self._bury(item, env, error, "", env.attempt + 1)))
            return
        starters = self.hooks.starters(task.name, task.config)
        if starters and (gate := self.hooks.gate(starters, env, task.config, item.queue)) is not None:
            held.job = asyncio.create_task(self._guard(item, held, self._admit(item, held, env, task, gate)))
            return
        held.job = asyncio.create_task(self._attempt(item, held, env, task, self._time_limit(held, env, task)))

    def _time_limit(self, held: Held, env: envelope_mod.Envelope, task: RegisteredTask) -> float:
        """The attempt's timeout, with its deadline armed from now."""
        timeout = env.timeout or task.config.timeout_s
        held.deadline = asyncio.get_running_loop().time() + timeout
        if held.deadline < self._timer_at:
            self._arm(held.deadline)
        return timeout

    async def _admit(
        self, item: Taken, held: Held, env: envelope_mod.Envelope, task: RegisteredTask, gate: Gate
    ) -> None:
        """A task a feature gates (rate or concurrency limits) starts only once admit.lua says so; otherwise it
        waits in Redis, off this worker, without an attempt counted (features/limits.py). Its body begins within
        the lateness admit.lua was told, or not at all: then it is admitted again, its first admission undone."""
        holder = self.limits.holder(env.id)
        undo_ms: int | None = None
        while True:
            late_s = self.limits.lateness.allowed_s
            if undo_ms is None:
                async with self.limits.turn(gate.waiting):  # this worker asks in the order it took them (FIFO)
                    await self._recorded(item.token)
                    admission, sent = await self._ask(item, gate, holder, late_s, undo_ms)
            else:
                admission, sent = await self._ask(item, gate, holder, late_s, undo_ms)
            if admission.verdict != "start":
                break
            held.start = Start(sent, admission.at_ms, sent + late_s) if gate.rated else None
            held.late = False
            await self._attempt(item, held, env, task, self._time_limit(held, env, task), admission.at_ms / 1000)
            if not held.late:
                return
            undo_ms = admission.at_ms
        if self.held.get(item.token) is held:
            del self.held[item.token]
        if admission.verdict == "waiting" and log.isEnabledFor(logging.DEBUG):
            fields = {"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": env.attempt + 1}
            log.debug("waiting: %s", admission.why, extra=fields)
        self.wake.set()

    async def _ask(
        self, item: Taken, gate: Gate, holder: str, late_s: float, undo_ms: int | None
    ) -> tuple[Admission, float]:
        """admit.lua's answer, and when (time.monotonic()) the call that got it was sent."""
        sent = 0.0

        def admit() -> Awaitable[Admission]:
            nonlocal sent
            sent = time.monotonic()
            return self.broker.admit(
                self.worker_id,
                item.token,
                item.queue,
                item.raw,
                spec=gate.spec,
                waiting=gate.waiting,
                counted=gate.waits_field,
                holder=holder,
                late_ms=math.ceil(late_s * 1000),
                undo_ms=undo_ms,
            )

        admission = await ride_out(admit, "admitting a limited task")
        return admission, sent

    # ---- timeouts: one timer for the earliest deadline -----------------------------------------------
    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, NO_DEADLINE
        now = asyncio.get_running_loop().time()
        soonest = NO_DEADLINE
        for held in self.held.values():
            if held.deadline <= now:
                held.deadline, held.overran = NO_DEADLINE, True
                if held.job is not None:
                    held.job.cancel(msg="timeout")
            elif held.deadline < soonest:
                soonest = held.deadline
        if soonest < NO_DEADLINE:
            self._arm(soonest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.threads.stop()

    # ---- one attempt ---------------------------------------------------------------------------------
    async def _attempt(
        self,
        item: Taken,
        held: Held,
        env: envelope_mod.Envelope,
        task: RegisteredTask,
        timeout: float,
        admitted_at: float | None = None,
    ) -> None:
        """Run one attempt and settle it; nothing is settled when its body could not begin in time (held.late)."""
        attempt = env.attempt + 1
        max_retries = env.max_retries if env.max_retries is not None else task.config.max_retries
        held.running = True
        if held.cancelled:  # while it waited for its limits
            await self._drop_cancelled(item, env, task)
            return
        if admitted_at is None:
            set_current((env.id, task.name, item.queue, attempt, max_retries))
        else:
            set_current((env.id, task.name, item.queue, attempt, max_retries, admitted_at))
        started = time.monotonic()
        try:
            if env.trace is None:
                value, failure = await self._call(held, env, task)
            else:
                value, failure = await self._traced_call(held, env, task, item.queue, attempt)
            if isinstance(failure, BeganLate):
                held.late, held.running = True, False
                self.limits.lateness.missed(failure.late_s)
                return
            if held.start is not None:
                self.limits.begun(env.id, held.start)
            elapsed = time.monotonic() - started
            self._observe(item.queue, task.name, elapsed)
            if failure is None:
                self._succeed(item, env, task, value)
                if log.isEnabledFor(logging.DEBUG):
                    fields = {"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": attempt}
                    log.debug("task done", extra={**fields, "duration_ms": round(elapsed * 1000, 2)})
            else:
                await self._failed(item, env, task, attempt, max_retries, failure, timeout, elapsed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(item, held, exc)

    async def _traced_call(
        self, held: Held, env: envelope_mod.Envelope, task: RegisteredTask, queue: str, attempt: int
    ) -> tuple[Any, Exception | None]:
        """`_call` in a span continuing the trace of the message's enqueue (tracing.py); a retry is a new
        attempt in the same trace."""
        assert env.trace is not None
        with tracing.task_span(env.trace, env.id, task.name, queue, attempt) as span:
            value, failure = await self._call(held, env, task)
            tracing.settled(span, failure, _described(failure))
        return value, failure

    async def _call(self, held: Held, env: envelope_mod.Envelope, task: RegisteredTask) -> tuple[Any, Exception | None]:
        """Run the task body: (its value, None) or (None, why it failed). Past its deadline it failed as a timeout."""
        value: Any = None
        failure: Exception | None = None
        try:
            if task.is_async:  # a task admitted by a rate limit begins on time or not at all
                started = task.call if held.start is None else functools.partial(on_time, held.start, task.call)
                value = await started(env.args, env.kwargs)
            else:
                value = await self._run_sync(held, task, env)
        except asyncio.CancelledError:
            if not held.overran and not held.cancelled:
                raise  # hand back: the shutdown path requeues the message
            failure = _Overrun() if held.overran else _Cancelled()
        except Exception as error:
            failure = error
        held.deadline = NO_DEADLINE  # from here on, only bookkeeping: the timer must not cancel it
        if held.cancelled and not held.overran:
            current = asyncio.current_task()
            if current is not None and current.uncancel() > 0:
                raise asyncio.CancelledError  # also told to stop (shutdown): hand back
            if not task.is_async:
                self.exit_code = EXIT_REPLACE  # its thread runs on: this process is replaced
            return None, _Cancelled()
        if held.overran:
            current = asyncio.current_task()
            if current is not None and current.uncancel() > 0:
                raise asyncio.CancelledError  # also told to stop (shutdown): hand back
            if failure is not None:
                failure = _Overrun()  # whatever it raised once cancelled, the attempt timed out
                if not task.is_async:
                    self.exit_code = EXIT_REPLACE  # a thread cannot be stopped: this process is replaced
        return value, failure

    async def _guard(self, item: Taken, held: Held, settle: Coroutine[Any, Any, None]) -> None:
        try:
            await settle
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(item, held, exc)

    def _lost(self, item: Taken, held: Held, exc: Exception) -> None:
        """A task's bookkeeping failed (a bug, or an error we did not foresee): the message must not keep its
        slot forever. Hand it back, so it runs again; after QUARANTINE_AFTER failures here, dead-letter it as
        it is. One log line with the traceback per message, not one per try."""
        tries = self._troubles.pop(item.raw, 0) + 1
        if tries == 1:
            log.exception("a task's bookkeeping failed; its message is handed back", extra={"queue": item.queue})
        if self.held.get(item.token) is not held:
            return
        del self.held[item.token]
        if tries >= QUARANTINE_AFTER:
            self._spawn(self._quarantine(item, tries, exc))
            return
        self._troubles[item.raw] = tries
        if len(self._troubles) > TROUBLES_KEPT:
            del self._troubles[next(iter(self._troubles))]
        self._spawn(self._give_back(item.token, held))

    async def _quarantine(self, item: Taken, tries: int, exc: Exception) -> None:
        """Dead-letter a message whose bookkeeping keeps failing, with only what cannot fail: its raw bytes,
        the queue and the reason (escaped). If even that fails, it stays in the in-flight hash, off the slots,
        until this worker retires and hands it back."""
        error = printable(f"quarantined: its bookkeeping failed {tries} times ({type(exc).__name__}: {exc})")
        task_id = f"quarantined-{self.worker_id}-{item.token.decode()}"
        record = DeadRecord.now(task_id, "(quarantined)", item.queue, item.raw, error, tries, self.worker_id)
        counted = [stat_field("failed", item.queue, "(invalid)"), stat_field("dead", item.queue, "(invalid)")]
        log.warning("dead-lettered: %s", error, extra={"task_id": task_id, "queue": item.queue})
        try:
            await self._settle(item.token, lambda: self.broker.bury(self.worker_id, item.token, record, counted))
        except Exception:
            log.exception("could not quarantine a message; it goes back when this worker stops")

    async def _give_back(self, token: bytes, held: Held) -> None:
        await self._recorded(token)
        await ride_out(lambda: self.broker.requeue(self.worker_id, token, held.queue, held.raw), "handing back a task")
        self.wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def _names_for(self, queue: str, task: str) -> _Names:
        names = self._names.get((queue, task))
        if names is None:
            buckets, total = stats.duration_names(queue, task)
            names = self._names[(queue, task)] = _Names(stat_field("processed", queue, task), buckets, total)
        return names

    def _observe(self, queue: str, task: str, seconds: float) -> None:
        names = self._names_for(queue, task)
        self.counters[names.buckets[stats.bucket_index(seconds)]] += 1
        self.counters[names.duration_total] += int(seconds * 1e6)

    async def _run_sync(self, held: Held, task: RegisteredTask, env: envelope_mod.Envelope) -> Any:
        # the context carries current_task(); a task admitted by a rate limit begins on time or not at all (on_time)
        if held.start is None:
            return await self.threads.run(task.call, env.args, env.kwargs)
        return await self.threads.run(on_time, held.start, task.call, env.args, env.kwargs)

    # ---- outcomes ------------------------------------------------------------------------------------
    def _succeed(self, item: Taken, env: envelope_mod.Envelope, task: RegisteredTask, value: Any) -> None:
        del self.held[item.token]
        features = self.hooks.of(task.name, task.config)
        effects = self.hooks.settle(features, "ok", env, item.queue, task.config, value) if features else None
        if effects:
            self.hooked.append((item.token, effects))
        else:
            self.acks.append(item.token)
        self.counters[self._names_for(item.queue, task.name).processed] += 1
        self.finished += 1
        self.wake.set()

    def _effects(
        self,
        task: RegisteredTask | None,
        status: Literal["retry", "dead"],
        env: envelope_mod.Envelope,
        queue: str,
        error: str,
    ) -> list[Effect]:
        if task is None:  # not declared here (removed from the YAML?): its message still settles what it held
            return self.hooks.settle(self.undeclared, status, env, queue, _UNDECLARED, error=error)
        features = self.hooks.of(task.name, task.config)
        return self.hooks.settle(features, status, env, queue, task.config, error=error) if features else []

    async def _trigger(self, item: Taken, env: envelope_mod.Envelope) -> None:
        """A message naming a YAML workflow: the workflow starts as the effect of this message's ack, in the
        same script, so it starts exactly once however often the message is delivered. Its id is
        WORKFLOW_ID_PREFIX + the message's id (what Client.enqueue returns for a workflow's name)."""
        flow = self.config.workflows[env.task]
        workflow_id = WORKFLOW_ID_PREFIX + env.id
        try:
            _, push = self.broker.producer.workflow(flow, workflow_id, env.args, env.kwargs, env.trace)
        except (UnknownTask, PayloadTooLarge, ValueError) as exc:
            await self._bury(item, env, f"cannot start workflow '{env.task}': {exc}", "", env.attempt + 1)
            return
        del self.held[item.token]
        self.hooked.append((item.token, [("wf_start", *push.args)]))
        self.counters[stat_field("processed", item.queue, env.task)] += 1
        self.finished += 1
        log.info("workflow %s started", workflow_id, extra={"task_id": env.id, "task": env.task, "queue": item.queue})
        self.wake.set()

    # ---- cancel ----------------------------------------------------------------------------------------
    def cancel(self, task_ids: Iterable[str]) -> None:
        """Tasks were cancelled (worker.py hears it on the cancel channel): remember them, and stop those that
        run here. An async task gets CancelledError; a sync one's thread cannot be stopped, so the task is
        settled as cancelled and this process is replaced."""
        self.cancelled.update(task_ids)
        if len(self.cancelled) > lookup.CANCELLED_KEPT * 2:  # Redis keeps the newest; so does a reload
            self.cancelled = set(list(self.cancelled)[-lookup.CANCELLED_KEPT :])
        for held in self.held.values():
            if held.task_id in self.cancelled and not held.cancelled:
                held.cancelled = True
                if held.running and held.job is not None and not held.job.done() and held.deadline < NO_DEADLINE:
                    log.info("cancelling a running task", extra={"task_id": held.task_id, "queue": held.queue})
                    held.job.cancel(msg="cancelled")

    async def _drop_cancelled(
        self, item: Taken, env: envelope_mod.Envelope, task: RegisteredTask | None = None
    ) -> None:
        """Settle a cancelled task without running it (or after stopping it): acknowledged with the effects of
        a cancel (its result says cancelled, its unique key and limits are released, its workflow stops)."""
        task = task or self.registry.get(env.task)
        features = self.hooks.of(task.name, task.config) if task else self.undeclared
        config: Any = task.config if task else _UNDECLARED
        effects = (
            self.hooks.settle(features, "cancelled", env, item.queue, config, error="cancelled") if features else []
        )
        if self.held.get(item.token) is not None:
            del self.held[item.token]
        if effects:
            self.hooked.append((item.token, effects))
        else:
            self.acks.append(item.token)
        counted_as = task.name if task else "(unknown)"
        self.counters[stat_field("cancelled", item.queue, counted_as)] += 1
        self.finished += 1
        log.info("cancelled", extra={"task_id": env.id, "task": env.task, "queue": item.queue})
        self.wake.set()

    # ---- progress ----------------------------------------------------------------------------------------
    def _progress_from_any_thread(self, task_id: str, fraction: float, message: str) -> None:
        fields = lookup.progress_fields(fraction, message)
        if threading.get_ident() == self._loop_thread:
            self.report_progress(task_id, fields)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self.report_progress, task_id, fields)

    def report_progress(self, task_id: str, fields: dict[str, str]) -> None:
        """current_task().progress(), from the loop's thread: the latest value is written, one write at a time."""
        first = not self._progress
        self._progress[task_id] = fields
        if first:
            self._spawn(self._write_progress())

    async def _write_progress(self) -> None:
        while self._progress:
            batch, self._progress = self._progress, {}
            try:
                await self.broker.write_progress(batch)
            except Exception as exc:  # progress is advice: a lost update is replaced by the next one
                log.debug("could not record progress: %s", exc)
                return

    async def _failed(
        self,
        item: Taken,
        env: envelope_mod.Envelope,
        task: RegisteredTask,
        attempt: int,
        max_retries: int,
        exc: Exception,
        timeout: float,
        elapsed: float,
    ) -> None:
        fields = {
            "task_id": env.id,
            "task": task.name,
            "queue": item.queue,
            "attempt": attempt,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if isinstance(exc, TypeError) and (mismatch := task.bind_problem(env.args, env.kwargs)):
            await self._bury(item, env, mismatch, "", attempt)  # checked only on failure: off the hot path
        elif isinstance(exc, Reject):
            await self._bury(item, env, f"rejected: {exc.reason}", "", attempt)
        elif isinstance(exc, _Cancelled):
            await self._drop_cancelled(item, env, task)
            if self.exit_code == EXIT_REPLACE:
                os.kill(os.getpid(), 15)  # a sync task cannot be stopped: stop taking work, be replaced
        elif isinstance(exc, RateLimited):
            await self._rate_limited(item, env, task, exc.retry_after)
        elif isinstance(exc, Retry):
            await self._fail(item, env, task, attempt, max_retries, f"retry requested: {exc.reason}", "", exc.delay)
        elif isinstance(exc, _Overrun):
            log.warning("task timed out after %.3gs", timeout, extra=fields)
            await self._fail(item, env, task, attempt, max_retries, f"timed out after {timeout:g}s", "", None)
        else:
            trace = "".join(traceback.format_exception(exc, limit=20))
            log.warning("task failed: %s: %s", type(exc).__name__, exc, extra=fields)
            await self._fail(item, env, task, attempt, max_retries, f"{type(exc).__name__}: {exc}", trace, None)

    async def _rate_limited(
        self, item: Taken, env: envelope_mod.Envelope, task: RegisteredTask, retry_after: float
    ) -> None:
        """The task said "too fast" (a partner's 429): back to wait, the same message (no attempt counted),
        its concurrency hold released with it."""
        wait = min(max(retry_after, 0.0), self.config.max_delay_s) if math.isfinite(retry_after) else 1.0
        push = self.broker.producer.later(item.queue, [item.raw], wait)
        features = (self.limits,) if task.config.limits is not None else ()
        effects = self.hooks.settle(features, "retry", env, item.queue, task.config) if features else []
        counted = [stat_field("rate_limited", item.queue, task.name)]
        await self._settle(item.token, lambda: self.broker.retry(self.worker_id, item.token, push, counted, effects))
        log.info(
            "rate limited by the task: back in %.3gs",
            wait,
            extra={"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": env.attempt + 1},
        )

    async def _fail(
        self,
        item: Taken,
        env: envelope_mod.Envelope,
        task: RegisteredTask,
        attempt: int,
        max_retries: int,
        error: str,
        trace: str,
        delay: float | None,
    ) -> None:
        if attempt > max_retries:
            await self._bury(item, env, error, trace, attempt)
        else:
            wait = backoff_s(task.config, attempt) if delay is None else delay
            # a Retry(delay=...) beyond limits.max_delay is cut to it (inf too); NaN or negative: at once
            wait = min(max(wait, 0.0), self.config.max_delay_s) if math.isfinite(wait) or wait > 0 else 0.0
            env.attempt = attempt
            counted = [
                stat_field("failed", item.queue, task.name),
                stat_field("retried", item.queue, task.name),
            ]
            push = self.broker.producer.later(item.queue, [env.encode()], wait)
            effects = self._effects(task, "retry", env, item.queue, error)
            failure = FailureRecord(env.id, task.name, item.queue, attempt, error, time.time(), wait, self.worker_id)
            await self._settle(
                item.token, lambda: self.broker.retry(self.worker_id, item.token, push, counted, effects, failure)
            )
            log.info(
                "retry in %.3gs",
                wait,
                extra={"task_id": env.id, "task": task.name, "queue": item.queue, "attempt": attempt},
            )
        if self.exit_code == EXIT_REPLACE:
            os.kill(os.getpid(), 15)  # a stuck thread: stop taking work and let the runner replace us

    async def _bury(
        self,
        item: Taken,
        env: envelope_mod.Envelope | None,
        error: str,
        trace: str = "",
        attempts: int = 1,
        *,
        ident: tuple[str | None, str | None] = (None, None),
    ) -> None:
        """Dead-letter; without an envelope, under the id and task name it still shows (`ident`), if any."""
        name = env.task if env else (ident[1] or "(invalid)")
        task_id = env.id if env else (ident[0] or f"invalid-{self.worker_id}-{item.token.decode()}")
        registered = self.registry.get(name)
        counted_as = name if registered else ("(unknown)" if env else "(invalid)")  # only declared names
        record = DeadRecord.now(
            task_id,
            name,
            item.queue,
            item.raw,
            error,
            attempts,
            self.worker_id,
            trace=trace,
            enqueued_at=env.enqueued_at if env else None,
        )
        counted = [stat_field("failed", item.queue, counted_as), stat_field("dead", item.queue, counted_as)]
        log.warning(
            "dead-lettered: %s",
            error,
            extra={"task_id": task_id, "task": name, "queue": item.queue, "attempt": attempts},
        )
        # a message that could not be decoded but shows a step's id still fails its workflow
        known = env or (envelope_mod.Envelope(name, task_id) if ident[0] else None)
        effects = self._effects(registered, "dead", known, item.queue, error) if known else []
        await self._settle(item.token, lambda: self.broker.bury(self.worker_id, item.token, record, counted, effects))

    async def _settle(self, token: bytes, script: Callable[[], Awaitable[bool]], *, finished: bool = True) -> None:
        """Run a retry/bury script, riding out a Redis outage; the message stays held until it lands.
        A held-back message (`finished=False`) did not run: it does not count towards max_tasks_per_child."""
        await self._recorded(token)
        await ride_out(script, "settling a task")
        self.held.pop(token, None)
        if finished:
            self.finished += 1
        self.wake.set()


@dataclass(frozen=True, slots=True)
class _Undeclared:
    """What the features may ask of a task that is not declared in this worker's YAML."""

    name: str = "(unknown)"
    result_ttl_s: float = 3600.0  # its dead-letter result, so result() raises at once instead of timing out
    limits: None = None


_UNDECLARED = _Undeclared()


class _Overrun(Exception):
    """An attempt ran past its timeout."""


def _described(failure: Exception | None) -> str:
    if isinstance(failure, BeganLate):
        return "not begun: admitted again"
    if isinstance(failure, _Overrun):
        return "timed out"
    if isinstance(failure, _Cancelled):
        return "cancelled"
    return f"{type(failure).__name__}: {failure}" if failure is not None else ""


class _Cancelled(Exception):
    """An attempt was stopped because its task was cancelled."""
