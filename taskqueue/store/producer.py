"""THE enqueue path: route a call, build its message, and turn it into the Redis calls that push it
(ready list, bounded queue, delayed set; one call per queue for a bulk enqueue). `Client`, `AsyncClient`,
the runner's own enqueues (CLI, HTTP), schedules and the worker's retries all build here; a feature that
changes what an enqueue does (unique keys, workflows) changes this module. Client-safe: redis + msgpack.

The plan is pure (no I/O): `Producer.plan()` returns `Push`es; `send()` / `asend()` run them on a sync or
asyncio client, so the two clients share every line but the await.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from taskqueue import canvas, envelope, tracing
from taskqueue.canvas import Flow
from taskqueue.errors import PayloadTooLarge, QueueFull, UnknownTask
from taskqueue.store.keys import Keys, join_member

Call = tuple[str, Sequence[Any], Mapping[str, Any]]
DEFAULT_MAX_DELAY_S = 365 * 86400.0  # limits.max_delay's default
WORKFLOW_ID_PREFIX = "wf-"  # a workflow's id; its steps are "<workflow id>.<index>"
DEFAULT_UNIQUE_FOR_S = 3600.0  # the hold of a per-call unique_key for a task without `unique_for`
MAX_UNIQUE_KEY = 200  # characters of a per-call unique_key


def due_ms(delay_s: float) -> int:
    """Due time of a delay in whole ms, rounded up: a task may start late by a fraction of a ms, never early."""
    return math.ceil((time.time() + delay_s) * 1000)


@dataclass(frozen=True, slots=True)
class TaskRoute:
    queue: str
    max_payload: int | None = None
    result_ttl_s: float = 3600.0
    workflow: bool = False  # a YAML workflow's name: the message starts it (its id: WORKFLOW_ID_PREFIX + message id)
    unique_for_s: float | None = None  # an equal call is not enqueued again while one is there (SPEC §11)
    events: int = 0  # lifecycle events on (SPEC §13): the events stream's max_len; 0 = off


@dataclass(slots=True)
class Routes:
    """Where each declared task goes and how long each queue may grow: from the tables the runner publishes
    in Redis (clients), or from the configuration itself (the runner)."""

    tasks: dict[str, TaskRoute] = field(default_factory=dict)
    max_length: dict[str, int | None] = field(default_factory=dict)  # every declared queue
    source: str = ""  # where an unknown task is looked up, for the error
    max_delay_s: float = DEFAULT_MAX_DELAY_S

    @classmethod
    def from_tables(cls, tasks: Mapping[bytes, bytes], queues: Mapping[bytes, bytes], source: str) -> Routes:
        found = {k.decode(): msgpack.unpackb(v) for k, v in tasks.items()}
        lengths = {k.decode(): msgpack.unpackb(v).get("max_length") for k, v in queues.items()}
        routes = {
            name: TaskRoute(
                str(t["queue"]),
                t.get("max_payload"),
                float(t.get("result_ttl", 3600.0)),
                bool(t.get("workflow")),
                float(t["unique_for"]) if t.get("unique_for") else None,
                int(t.get("events") or 0),
            )
            for name, t in found.items()
        }
        delays = [float(t["max_delay"]) for t in found.values() if "max_delay" in t]
        return cls(routes, lengths, source, min(delays) if delays else DEFAULT_MAX_DELAY_S)

    def queue_for(self, task: str, queue: str | None) -> str:
        route = self.tasks.get(task)
        if route is None:
            if not self.tasks and queue and "|" not in queue:
                return queue  # no runner has published routes yet: a named queue needs none (as redis-cli)
            if not self.tasks:
                raise UnknownTask(
                    f"no task table at {self.source}: start the runner once so clients can route by name "
                    "(or name the queue: enqueue(..., queue=...)); a runner whose redis.key_prefix is not "
                    f"'{self.source.rsplit(':', 1)[0]}' needs Client(..., key_prefix=...) "
                    "or Client.from_config(its YAML)"
                )
            raise UnknownTask(f"unknown task '{task}' ({_known(task, self.tasks)})")
        chosen = queue or route.queue
        if chosen not in self.max_length:
            raise UnknownTask(f"unknown queue '{chosen}' ({_known(chosen, self.max_length)})")
        return chosen


def _known(name: str, known: Iterable[str]) -> str:
    """`did you mean 'x'? declared: …` for an unknown name (the hint only when one is close)."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"{f'did you mean {close[0]!r}? ' if close else ''}declared: {', '.join(names)}"


@dataclass(frozen=True, slots=True)
class Push:
    """One Redis call of an enqueue. `kind` says how it runs: a plain LPUSH, the bounded-queue script
    (all or nothing; reply < 0 is QueueFull) or the delayed-set script."""

    kind: Literal["lpush", "bounded", "delayed", "workflow", "unique"]
    queue: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    count: int
    slot: int = -1  # "unique": the index of its id in the plan's ids
    # tasks of this push with lifecycle events on: (stream, stats hash, max_len, E, E pairs of id and task);
    # such a push runs as evented.lua (the push and its `enqueued` events in one script), others as before
    events: tuple[Any, ...] = ()

    def check(self, reply: Any) -> str | None:
        """Raises what the reply means; for a "unique" push, returns the id of the task already there, if any."""
        if self.kind in ("bounded", "unique") and isinstance(reply, int) and reply < 0:
            limit = self.args[0] if self.kind == "bounded" else self.args[7]
            raise QueueFull(f"queue '{self.queue}' is full (max_length {limit})")
        if self.kind == "workflow" and int(reply) == 0:
            raise ValueError(f"workflow {self.keys[0]} exists already")
        if self.kind == "unique" and not isinstance(reply, int):
            return reply.decode() if isinstance(reply, bytes) else str(reply)
        return None


class Producer:
    def __init__(self, keys: Keys, routes: Routes) -> None:
        self.keys = keys
        self.routes = routes

    def message(
        self,
        task: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        task_id: str | None = None,
        now: float = 0.0,
        unique: str | None = None,
        trace: str | None = None,
    ) -> tuple[str, bytes]:
        """(task id, encoded message) of one call; raises PayloadTooLarge, or ValueError (not encodable)."""
        task_id = task_id or envelope.new_id()
        try:
            message = envelope.pack(task, task_id, args, kwargs, now or round(time.time(), 6), unique, trace)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"task '{task}': args/kwargs hold a value MessagePack cannot encode ({exc})") from None
        route = self.routes.tasks.get(task)
        limit = route.max_payload if route else None
        if limit and len(message) > limit:
            raise PayloadTooLarge(
                f"task '{task}': message of {len(message)} bytes exceeds limits.max_payload_size ({limit} bytes)"
            )
        return task_id, message

    def plan(
        self,
        calls: Iterable[Call],
        *,
        queue: str | None = None,
        delay_s: float = 0.0,
        task_id: str | None = None,
        unique_key: str | None = None,
    ) -> tuple[list[str], list[Push]]:
        """Ids and pushes of a batch of calls: one push per target queue, in order of first appearance, and
        one per call that holds a unique key (its check and its enqueue are one script: `unique.lua`).
        Every message carries the current span's trace context when there is one (tracing.py).
        Raises UnknownTask, PayloadTooLarge, or ValueError (not encodable, or a delay beyond the limit)."""
        if not 0 <= delay_s <= self.routes.max_delay_s:  # also refuses NaN
            raise ValueError(f"delay of {delay_s:g}s is outside 0 .. limits.max_delay ({self.routes.max_delay_s:g}s)")
        if unique_key is not None and not 0 < len(unique_key) <= MAX_UNIQUE_KEY:
            raise ValueError(f"unique_key must be a non-empty string of at most {MAX_UNIQUE_KEY} characters")
        ids: list[str] = []
        by_queue: dict[str, list[bytes]] = {}
        evented: dict[str, list[str]] = {}  # queue -> ids and names of its tasks with events on
        events_max_len = 0
        uniques: list[Push] = []
        now = round(time.time(), 6)  # one timestamp for the batch
        trace = tracing.traceparent()  # and one trace context (None without opentelemetry in use)
        for name, args, kwargs in calls:
            target = self.routes.queue_for(name, queue)
            route = self.routes.tasks.get(name)
            hold_s = route.unique_for_s if route else None
            if unique_key is not None or hold_s:
                lock = unique_lock(name, args, kwargs, unique_key)
                new_id, message = self.message(name, args, kwargs, task_id, now, lock, trace)
                hold = hold_s or DEFAULT_UNIQUE_FOR_S
                events = (name, route.events) if route and route.events else None
                uniques.append(self.unique(target, message, new_id, lock, hold, delay_s, len(ids), events))
            else:
                new_id, message = self.message(name, args, kwargs, task_id, now, trace=trace)
                by_queue.setdefault(target, []).append(message)
                if route and route.events:
                    evented.setdefault(target, []).extend((new_id, name))
                    events_max_len = route.events
            ids.append(WORKFLOW_ID_PREFIX + new_id if route and route.workflow else new_id)
        pushes = [self.push(target, messages, delay_s) for target, messages in by_queue.items()]
        if evented:
            pushes = [self.with_events(p, evented.get(p.queue, ()), events_max_len) for p in pushes]
        return ids, pushes + uniques

    def with_events(self, push: Push, pairs: Sequence[str], max_len: int) -> Push:
        """The push, also writing the `enqueued` events of `pairs` (task id, name, ...) in the same script."""
        if not pairs:
            return push
        events = (self.keys.events, self.keys.stats, max_len, len(pairs) // 2, *pairs)
        return Push(push.kind, push.queue, push.keys, push.args, push.count, push.slot, events)

    def unique(
        self,
        queue: str,
        message: bytes,
        task_id: str,
        lock: str,
        hold_s: float,
        delay_s: float,
        slot: int = 0,
        events: tuple[str, int] | None = None,
    ) -> Push:
        """The one script call that enqueues a message holding unique key `lock` unless another task holds it;
        with `events` (task name, the events stream's max_len), its `enqueued` event too."""
        keys = self.keys
        if delay_s > 0:
            target, mode, extra, body = keys.delayed, "delayed", str(due_ms(delay_s)), join_member(queue, message)
        else:
            limit = self.routes.max_length.get(queue)
            mode = "lpush" if limit is None else "bounded"
            target, extra, body = keys.queue(queue), str(limit or ""), message
        argv: tuple[Any, ...] = (*self.hold(queue, task_id, lock, hold_s)[1:], mode, extra, body, keys.delayed_wake)
        if events is not None:
            argv += (keys.events, events[1], queue, events[0])
        return Push("unique", queue, (keys.unique(lock), target), argv, 1, slot)

    def lock_of(self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, float] | None:
        """(lock, hold) of a call of a task declared with `unique_for`, else None (schedules use it)."""
        route = self.routes.tasks.get(task)
        if route is None or not route.unique_for_s:
            return None
        return unique_lock(task, args, kwargs, None), route.unique_for_s

    def hold(self, queue: str, task_id: str, lock: str, hold_s: float) -> tuple[Any, ...]:
        """What a script needs to take unique key `lock` for `task_id` (see unique.lua): the lock's key, the
        id, the hold (ms), the result key prefix, the dead hash, the stats hash and the duplicates counter."""
        keys = self.keys
        duplicates = f"duplicate:{queue}:{message_task(lock)}"
        hold_ms = max(1, math.ceil(hold_s * 1000))
        return (keys.unique(lock), task_id, hold_ms, keys.result_prefix, keys.dead, keys.stats, duplicates)

    def push(self, queue: str, messages: Sequence[bytes], delay_s: float = 0.0) -> Push:
        """The Redis call that puts already-built messages on `queue` (or in the delayed set)."""
        if delay_s > 0:
            return self.later(queue, messages, delay_s)
        limit = self.routes.max_length.get(queue)
        if limit is None:
            return Push("lpush", queue, (self.keys.queue(queue),), tuple(messages), len(messages))
        return Push("bounded", queue, (self.keys.queue(queue),), (limit, *messages), len(messages))

    def later(self, queue: str, messages: Sequence[bytes], delay_s: float) -> Push:
        """Into the delayed set, due in `delay_s` (0: at once, through the delayed-task timer, as a retry is)."""
        due = due_ms(delay_s)
        argv: list[Any] = [self.keys.delayed_wake]
        for message in messages:
            argv += (due, join_member(queue, message))
        return Push("delayed", queue, (self.keys.delayed,), tuple(argv), len(messages))

    def workflow(
        self,
        flow: Flow,
        workflow_id: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        trace: str | None = None,
    ) -> tuple[str, Push]:
        """The id and the one push that starts a workflow: its hash (every step's message around the
        place of its input, what waits for what) and its entry steps, written by workflow.lua at once.
        A step goes to its task's queue; its message is checked against the payload limit without its
        input (the results it receives are known only when they exist). Every step carries `trace`, or
        the current span's trace context."""
        laid = canvas.lay_out(flow, args, kwargs)
        trace = trace or tracing.traceparent()
        workflow_id = workflow_id or WORKFLOW_ID_PREFIX + envelope.new_id()
        dependents = laid.dependents()
        ttl_s = 0.0
        events_max_len = 0  # some step's task has lifecycle events on: the stream's max_len
        fields: list[Any] = []
        entries: list[Any] = []
        for index, (part, given) in enumerate(laid.steps):
            queue = self.routes.queue_for(part.task, None)
            route = self.routes.tasks.get(part.task)
            ttl_s = max(ttl_s, route.result_ttl_s if route else 3600.0)
            head, tail = self._step_message(part, f"{workflow_id}.{index}", given is not None, trace)
            fields += (f"t:{index}", part.task, f"q:{index}", queue, f"p:{index}", head, f"x:{index}", tail)
            if given is None:
                fields += (f"s:{index}", "queued")
                entries += (queue, head + tail)
            else:
                fields += (f"in:{index}", canvas.pack_source(given), f"w:{index}", len(laid.waits(index)))
            if index in dependents:
                fields += (f"d:{index}", msgpack.packb(dependents[index]))
            if route and route.events:
                fields += (f"e:{index}", 1)
                events_max_len = route.events
        count = len(laid.steps)
        if events_max_len:
            fields += ("events", self.keys.events, "events_max_len", events_max_len)
        fields += ("state", "running", "steps", count, "left", count, "failed", 0)
        created = time.time()
        fields += ("ttl", int(max(ttl_s, 1.0) * 1000), "out", canvas.pack_source(laid.out), "created", created)
        keys = (self.keys.workflow(workflow_id), self.keys.stats, self.keys.workflows)
        start = (*keys, self.keys.queue_prefix, workflow_id, int(created * 1000))
        rest = (*start, len(fields) // 2, *fields, len(entries) // 2, *entries)
        return workflow_id, Push("workflow", "", keys, (len(rest), *rest), len(entries) // 2)

    def _step_message(self, part: canvas.Step, step_id: str, prepend: bool, trace: str | None) -> tuple[bytes, bytes]:
        """A step's envelope in two pieces, with `args` last, so that the input can go between them."""
        body: dict[str, Any] = {"id": step_id, "task": part.task}
        if part.kwargs:
            body["kwargs"] = dict(part.kwargs)
        if trace is not None:
            body["trace"] = trace
        packer = msgpack.Packer(use_bin_type=True)
        try:
            head = packer.pack_map_header(len(body) + 1) + b"".join(
                packer.pack(k) + packer.pack(v) for k, v in body.items()
            )
            head += packer.pack("args") + packer.pack_array_header(len(part.args) + (1 if prepend else 0))
            tail = b"".join(packer.pack(arg) for arg in part.args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(
                f"task '{part.task}': args/kwargs hold a value MessagePack cannot encode ({exc})"
            ) from None
        route = self.routes.tasks.get(part.task)
        if route and route.max_payload and len(head) + len(tail) > route.max_payload:
            raise PayloadTooLarge(
                f"task '{part.task}': message of {len(head) + len(tail)} bytes exceeds limits.max_payload_size "
                f"({route.max_payload} bytes)"
            )
        return head, tail


def unique_lock(task: str, args: Sequence[Any], kwargs: Mapping[str, Any], unique_key: str | None) -> str:
    """What makes two calls "equal" (SPEC §11): the same task and the same unique_key, or else the same
    args and kwargs (kwargs in any order). The lock's name within Keys.unique."""
    if unique_key is not None:
        return f"{task}:k:{unique_key}"
    try:
        packed = msgpack.packb([list(args), sorted(kwargs.items())], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"task '{task}': args/kwargs hold a value MessagePack cannot encode ({exc})") from None
    return f"{task}:{hashlib.blake2b(packed, digest_size=16).hexdigest()}"


def message_task(lock: str) -> str:
    return lock.partition(":")[0]


class Sender:
    """Runs pushes on one client (sync or asyncio). Scripts are registered once; a plain LPUSH may take a
    faster path (`lpush`: a callable returning False when it could not run, to use the regular client)."""

    def __init__(self, client: Any, scripts: Mapping[str, Any], fast_lpush: Any = None) -> None:
        self.client = client
        self.bounded = scripts["enqueue"]
        self.delayed = scripts["schedule"]
        self.workflow = scripts["workflow"]
        self.unique = scripts["unique"]
        self.evented = scripts["evented"]
        self.fast_lpush = fast_lpush

    def send(self, pushes: Sequence[Push], ids: list[str] | None = None) -> None:
        """Run the pushes; a duplicate of a unique task puts the id of the task already there into `ids`."""
        for push in pushes:
            if push.events:
                push.check(self.evented(keys=self._evented_keys(push), args=self._evented_args(push)))
                continue
            if push.kind == "lpush":
                if self.fast_lpush is None or not self.fast_lpush(*push.keys, *push.args):
                    self.client.lpush(*push.keys, *push.args)
                continue
            held = push.check(self._script(push)(keys=list(push.keys), args=list(push.args)))
            if held is not None and ids is not None:
                ids[push.slot] = held

    async def asend(self, pushes: Sequence[Push], ids: list[str] | None = None) -> None:
        for push in pushes:
            if push.events:
                push.check(await self.evented(keys=self._evented_keys(push), args=self._evented_args(push)))
                continue
            if push.kind == "lpush":
                if self.fast_lpush is None or not await self.fast_lpush(*push.keys, *push.args):
                    await self.client.lpush(*push.keys, *push.args)
                continue
            held = push.check(await self._script(push)(keys=list(push.keys), args=list(push.args)))
            if held is not None and ids is not None:
                ids[push.slot] = held

    @staticmethod
    def _evented_keys(push: Push) -> list[Any]:
        return [*push.keys, push.events[0], push.events[1]]

    @staticmethod
    def _evented_args(push: Push) -> list[Any]:
        return [push.kind, push.events[2], push.queue, *push.events[3:], *push.args]  # see evented.lua

    def _script(self, push: Push) -> Any:
        scripts = {"bounded": self.bounded, "delayed": self.delayed, "workflow": self.workflow, "unique": self.unique}
        return scripts[push.kind]
