"""The only module that changes task state in Redis: every multi-key change is one Lua script (by SHA)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
from redis.exceptions import NoScriptError

from taskqueue import envelope
from taskqueue.config import Config
from taskqueue.features import Effect
from taskqueue.store import lookup, scripts
from taskqueue.store.connection import DirectConnection
from taskqueue.store.keys import Keys, join_member
from taskqueue.store.producer import Producer, Push, Routes, Sender, TaskRoute
from taskqueue.store.stats import field as stat_field

HOST = socket.gethostname()
MAX_ACKS_PER_CALL = 2000  # stays well inside Lua's unpack() limit
DEAD_MESSAGE_BYTES = 64 * 1024  # what a dead-letter record keeps of its message
FAILURES_KEPT = 100  # how many of the newest failed attempts {p}:failures keeps (the dashboard's "Recent failures")
FAILURE_ERROR_CHARS = 500  # what a failure record keeps of its error
RELOAD_ANSWERS_KEPT_S = 600  # a reload request's answers, for a CLI that waits on them

Hooked = Sequence[tuple[bytes, Sequence[Effect]]]  # finished tokens and the effects of their settle


def effect_args(effects: Sequence[Effect]) -> list[Any]:
    """A block of effects as the settle scripts read it (lua/hooks/_prelude.lua): count, then each one."""
    argv: list[Any] = [len(effects)]
    for effect in effects:
        argv += effect
    return argv


def outbox_args(acks: Sequence[bytes], counters: Mapping[str, int], hooked: Hooked) -> list[Any]:
    """A worker's outbox as exchange.lua and retire.lua read it (settle_outbox in lua/hooks/_prelude.lua)."""
    argv: list[Any] = [len(acks), *acks, len(counters)]
    for name, count in counters.items():
        argv += (name, count)
    argv.append(len(hooked))
    for token, effects in hooked:
        argv.append(token)
        argv += effect_args(effects)
    return argv


def claims_args(
    queue_names: Sequence[str], claims: Sequence[Taken], unclaims: Sequence[tuple[str, bytes]]
) -> list[Any]:
    """A worker's claims as exchange.lua and retire.lua read them (record_claims in lua/hooks/_prelude.lua)."""
    if not claims and not unclaims:
        return [0, 0]  # the busy path: no watcher took anything
    number = {name: n for n, name in enumerate(queue_names, 1)}
    argv: list[Any] = [len(claims)]
    for item in claims:
        argv += (item.token, number[item.queue], item.raw)
    argv.append(len(unclaims))
    for queue, raw in unclaims:
        argv += (number[queue], raw)
    return argv


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Taken:
    """One message a worker took: its token (per worker), queue and raw bytes."""

    token: bytes
    queue: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class DeadRecord:
    id: str
    task: str
    queue: str
    message: bytes  # the message as received (a preview when it was too large)
    truncated: bool
    error: str
    traceback: str
    attempts: int
    enqueued_at: float | None
    failed_at: float
    worker: str

    @classmethod
    def now(
        cls,
        task_id: str,
        task: str,
        queue: str,
        raw: bytes,
        error: str,
        attempts: int,
        worker: str,
        *,
        trace: str = "",
        enqueued_at: float | None = None,
    ) -> DeadRecord:
        """The record of a message dead-lettered now (the message kept up to DEAD_MESSAGE_BYTES)."""
        kept = envelope.preview(raw, DEAD_MESSAGE_BYTES)
        return cls(
            task_id, task, queue, kept, len(kept) < len(raw), error, trace, attempts, enqueued_at, time.time(), worker
        )

    def encode(self) -> bytes:
        return _pack_record({f: getattr(self, f) for f in self.__slots__})

    @classmethod
    def decode(cls, raw: bytes) -> DeadRecord:
        return cls(**_unpack_record(raw, cls.__slots__))

    def public(self) -> dict[str, Any]:
        """JSON-friendly view (CLI, HTTP)."""
        body = {f: getattr(self, f) for f in self.__slots__ if f != "message"}
        body["message"] = self.message.decode("utf-8", "replace") if self.message[:1] in (b"{", b"[") else None
        return body


def _pack_record(body: Mapping[str, Any]) -> bytes:
    """A dead-letter or failure record as msgpack; an error text that quotes a broken string is kept, escaped."""
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except UnicodeEncodeError:
        packed = msgpack.packb({k: envelope.printable(v) for k, v in body.items()}, use_bin_type=True)
    return packed


def _unpack_record(raw: bytes, fields: Sequence[str]) -> dict[str, Any]:
    body = msgpack.unpackb(raw, raw=False)
    return {f: body.get(f) for f in fields}


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed attempt, as {p}:failures keeps it: `retry_in` is the backoff (s) of the attempt that follows,
    None when the task was dead-lettered instead."""

    id: str
    task: str
    queue: str
    attempt: int
    error: str
    at: float
    retry_in: float | None
    worker: str

    @classmethod
    def of_dead(cls, record: DeadRecord) -> FailureRecord:
        return cls(
            record.id, record.task, record.queue, record.attempts, record.error, record.failed_at, None, record.worker
        )

    def encode(self) -> bytes:
        return _pack_record(
            {**{f: getattr(self, f) for f in self.__slots__}, "error": self.error[:FAILURE_ERROR_CHARS]}
        )

    @classmethod
    def decode(cls, raw: bytes) -> FailureRecord:
        return cls(**_unpack_record(raw, cls.__slots__))

    def public(self) -> dict[str, Any]:
        """JSON-friendly view (HTTP): the record, and whether another attempt follows."""
        return {**{f: getattr(self, f) for f in self.__slots__}, "will_retry": self.retry_in is not None}


@dataclass(frozen=True, slots=True)
class Admission:
    """admit.lua's answer: "start" (at `at_ms`), "waiting" (until `at_ms`, held by `why`), or "gone" (the task
    was recovered elsewhere meanwhile). Times are Redis' clock, in ms."""

    verdict: Literal["start", "waiting", "gone"]
    at_ms: int = 0
    why: str = ""


BACKLOG_DUE_READ = 10_000  # due delayed members read for their queue; beyond, only counted (a stopped timer)


@dataclass(frozen=True, slots=True)
class Backlog:
    """`Broker.backlog()`: queue → (ready, due delayed, running); the live workers and their slots; due delayed
    messages counted but not attributed to a queue (more than BACKLOG_DUE_READ were due)."""

    workers: int
    slots: int
    due_unread: int
    queues: Mapping[str, tuple[int, int, int]]


class Broker:
    def __init__(self, client: Any, config: Config) -> None:
        self.redis: Any = client  # redis.asyncio.Redis, or its Cluster/Sentinel flavour
        self.config = config
        self.keys = Keys(config.redis.key_prefix)
        self.queue_names = [q.name for q in config.queues]
        self.queue_keys = [self.keys.queue(q) for q in self.queue_names]
        self._exchange = client.register_script(scripts.source("exchange"))
        # The pump is the only caller of exchange, one call at a time: it gets a connection of its own.
        self._direct = DirectConnection(client) if DirectConnection.possible(client) else None
        self._retry = client.register_script(scripts.source("retry"))
        self._bury = client.register_script(scripts.source("bury"))
        self._requeue = client.register_script(scripts.source("requeue"))
        self._promote = client.register_script(scripts.source("promote"))
        self._enqueue = client.register_script(scripts.source("enqueue"))
        self._schedule = client.register_script(scripts.source("schedule"))
        self._revive = client.register_script(scripts.source("revive"))
        self._fire = client.register_script(scripts.source("fire"))
        self._admit = client.register_script(scripts.source("admit"))
        self._backlog = client.register_script(scripts.source("load"))
        self._lookups = {name: client.register_script(scripts.source(name)) for name in lookup.SCRIPTS}
        max_len = config.events_cap
        tasks = {
            name: TaskRoute(
                t.queue,
                config.max_payload_bytes,
                t.result_ttl_s,
                unique_for_s=t.unique_for_s,
                events=max_len if t.events else 0,
            )
            for name, t in config.tasks.items()
        }
        # exchange.lua writes `started` for these tasks (nothing at all is added when there are none)
        evented = config.event_tasks
        self._started_args = [len(evented), self.keys.events, max_len, *evented] if evented else [0]
        for name in config.workflows:  # a workflow's name is enqueued like a task's: to its first step's queue
            tasks[name] = TaskRoute(config.queue_of(name), config.max_payload_bytes, workflow=True)
        routes = Routes(tasks, {q.name: q.max_length for q in config.queues}, max_delay_s=config.max_delay_s)
        self.producer = Producer(self.keys, routes)
        self._workflow = client.register_script(scripts.source("workflow"))
        self._unique = client.register_script(scripts.source("unique"))
        self._evented = client.register_script(scripts.source("evented"))
        self._sender = Sender(
            client,
            {
                "enqueue": self._enqueue,
                "schedule": self._schedule,
                "workflow": self._workflow,
                "unique": self._unique,
                "evented": self._evented,
            },
        )
        self._retire = client.register_script(scripts.source("retire"))
        self._heartbeat = client.register_script(scripts.source("heartbeat"))
        self._adopt = client.register_script(scripts.source("adopt"))

    async def exchange(
        self,
        worker_id: str,
        acks: Sequence[bytes],
        counters: Mapping[str, int],
        hooked: Hooked,
        want: int,
        token_base: int,
        claims: Sequence[Taken] = (),
        unclaims: Sequence[tuple[str, bytes]] = (),
        seq: int | None = None,
    ) -> list[Taken]:
        """Record what the worker's watchers claimed, settle finished tokens (with their effects), bump counters
        and take up to `want` messages: one round trip. `seq` numbers the worker's requests (exchange.lua): a
        request that takes or counts must have one, and one that got no answer is sent again as it was."""
        if seq is None and (want or counters):
            raise ValueError("an exchange that takes or counts needs its sequence number")
        acks = await self._settle_excess_acks(worker_id, acks)
        names = self.queue_names
        argv = [
            "" if seq is None else seq,
            want,
            token_base,
            *names,
            *self._started_args,
            *claims_args(names, claims, unclaims),
            *outbox_args(acks, counters, hooked),
        ]
        reply = await self._exchange_call(self._exchange_keys(worker_id), argv)
        return [Taken(reply[i], names[reply[i + 1] - 1], reply[i + 2]) for i in range(0, len(reply), 3)]

    async def _settle_excess_acks(self, worker_id: str, acks: Sequence[bytes]) -> list[bytes]:
        """Only after a long Redis outage: acknowledge all but the last MAX_ACKS_PER_CALL tokens in calls of
        their own (Lua's unpack() has a limit); returns the rest, for the call at hand."""
        acks = list(acks)
        while len(acks) > MAX_ACKS_PER_CALL:
            chunk, acks = acks[:MAX_ACKS_PER_CALL], acks[MAX_ACKS_PER_CALL:]
            argv = ["", 0, 0, *self.queue_names, 0, 0, 0, *outbox_args(chunk, {}, ())]
            await self._exchange_call(self._exchange_keys(worker_id), argv)
        return acks

    def _exchange_keys(self, worker_id: str) -> list[str]:
        return [
            self.keys.inflight(worker_id),
            self.keys.stats,
            self.keys.fence(worker_id),
            *self.queue_keys,
            *self.claim_keys(worker_id),
        ]

    def claim_keys(self, worker_id: str) -> list[str]:
        """The worker's claim lists, one per queue, in the ready lists' order (its watchers BLMOVE into them)."""
        return [self.keys.claim(worker_id, q) for q in self.queue_names]

    async def _exchange_call(self, keys: list[str], argv: list[Any]) -> Any:
        if self._direct is None or self._direct.busy:
            return await self._exchange(keys=keys, args=argv)
        try:
            return await self._direct.execute("EVALSHA", self._exchange.sha, len(keys), *keys, *argv)
        except NoScriptError:  # not run: Redis lost its scripts (a restart); the regular call loads it
            return await self._exchange(keys=keys, args=argv)

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()

    async def retry(
        self,
        worker_id: str,
        token: bytes,
        push: Push,
        stats: Sequence[str],
        effects: Sequence[Effect] = (),
        failure: FailureRecord | None = None,
    ) -> bool:
        """Settle a failed attempt by the producer's delayed push of its next one (`producer.later(q, [m], wait)`).
        With `failure` (a failed attempt, not a held-back or rate-limited one), it joins the recent failures."""
        if push.kind != "delayed" or push.count != 1:
            raise ValueError("a retry is the delayed push of one message")
        keys = [self.keys.inflight(worker_id), self.keys.delayed, self.keys.stats]
        if failure is not None:
            effects = [*effects, self._failure_effect(failure)]
        argv = [token, len(stats), *stats, *effect_args(effects), *push.args]
        return bool(await self._retry(keys=keys, args=argv))

    async def bury(
        self,
        worker_id: str,
        token: bytes | None,
        record: DeadRecord,
        stats: Sequence[str],
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Dead-letter (token None: a message that was never in flight, e.g. from `dead` tooling); the attempt
        joins the recent failures in the same script."""
        dead = self.config.dead_letter
        effects = [*effects, self._failure_effect(FailureRecord.of_dead(record))]
        now = now_ms()
        keys = [self.keys.inflight(worker_id), self.keys.dead, self.keys.dead_index, self.keys.stats]
        argv = [
            token or b"",
            record.id,
            record.encode(),
            now,
            dead.max_size,
            now - int(dead.max_age_s * 1000),
            len(stats),
            *stats,
            *effect_args(effects),
        ]
        return bool(await self._bury(keys=keys, args=argv))

    def _failure_effect(self, failure: FailureRecord) -> Effect:
        return ("failure", self.keys.failures, FAILURES_KEPT, failure.encode())

    async def recent_failures(self, limit: int = 20) -> list[FailureRecord]:
        """The newest failed attempts (retried or dead-lettered), newest first; at most FAILURES_KEPT."""
        return [FailureRecord.decode(raw) for raw in await self.redis.lrange(self.keys.failures, 0, limit - 1)]

    async def requeue(self, worker_id: str, token: bytes, queue: str, message: bytes) -> bool:
        keys = [self.keys.inflight(worker_id), self.keys.queue(queue)]
        return bool(await self._requeue(keys=keys, args=[token, message]))

    async def admit(
        self,
        worker_id: str,
        token: bytes,
        queue: str,
        raw: bytes,
        *,
        spec: str,
        waiting: str,
        counted: str,
        holder: str,
        late_ms: int,
        undo_ms: int | None = None,
    ) -> Admission:
        """May a limited task start now (admit.lua; `spec` and `waiting` from features/limits.py)? Its body must
        then begin within `late_ms`. If not, it left this worker for its limit's waiting list, counted in stats
        field `counted`. `undo_ms`: the time of this holder's admission whose body did not begin in time."""
        keys = self.keys
        member = join_member(queue, raw)
        argv = [token, holder, keys.workers, waiting, keys.limits_waiting, keys.limits_spec, spec, member, counted]
        argv += [keys.delayed_wake, str(late_ms), "" if undo_ms is None else str(undo_ms)]
        reply = await self._admit(keys=[keys.inflight(worker_id), keys.stats], args=argv)
        verdict = int(reply[0])
        if verdict == 0:
            why = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            return Admission("waiting", int(reply[1]), why)
        if verdict == 1:
            return Admission("start", int(reply[1]))
        return Admission("gone")

    async def status(self, task_id: str) -> dict[str, Any] | None:
        """Client.status() for the CLI and HTTP (store/lookup.py)."""
        found: dict[str, Any] | None = await lookup.arun(lookup.status(self.keys, task_id), self.redis, self._lookups)
        return found

    async def cancel(self, task_id: str) -> str:
        """Client.cancel(): "cancelled", "cancelling", "already_cancelled" or "not_found"."""
        tasks = self.config.tasks

        def ttl(name: str) -> float:
            return tasks[name].result_ttl_s if name in tasks else 3600.0

        answer: str = await lookup.arun(lookup.cancel(self.keys, task_id, ttl), self.redis, self._lookups)
        return answer

    async def write_progress(self, batch: Mapping[str, Mapping[str, str]]) -> None:
        """The latest progress of running tasks (current_task().progress()), kept a day."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id, fields in batch.items():
                pipe.hset(self.keys.progress(task_id), mapping=dict(fields))
                pipe.expire(self.keys.progress(task_id), 86400)
            await pipe.execute()

    async def load_cancelled(self) -> set[str]:
        """The ids cancelled in the last days (cancel.lua keeps them), for a worker's copy."""
        return {i.decode() for i in await self.redis.zrange(self.keys.cancelled, 0, -1)}

    async def promote(self, limit: int) -> tuple[int, int | None]:
        """Move due delayed messages to their queues; returns (moved, next due time in ms or None)."""
        keys = self.keys
        argv = [now_ms(), limit, keys.queue_prefix, keys.limits_waiting, keys.limits_spec, keys.workers]
        moved, next_due = await self._promote(keys=[keys.delayed], args=argv)
        due = int(float(next_due))
        return int(moved), (None if due < 0 else due)

    async def send(self, pushes: Sequence[Push], task: str = "", ids: list[str] | None = None) -> None:
        """Run the producer's pushes for the runner's own enqueues (CLI, HTTP API); raises QueueFull.
        With `task`, counts them as `enqueued:<queue>:<task>` (a client's enqueue, one LPUSH, is not counted:
        that would be a Redis command more per enqueue).
        A duplicate of a unique task puts the id of the task already there into `ids`."""
        await self._sender.asend(pushes, ids)
        if task:
            for push in pushes:
                await self.redis.hincrby(self.keys.stats, stat_field("enqueued", push.queue, task), push.count)

    async def heartbeat(self, worker_id: str, info: Mapping[str, Any], lease_s: float) -> None:
        """Renew the worker's lease (heartbeat.lua: also when Redis is at maxmemory)."""
        lease_ms = int(lease_s * 1000)
        fields = [str(part) for pair in info.items() for part in pair]
        keys = [self.keys.workers, self.keys.worker(worker_id)]
        await self._heartbeat(keys=keys, args=[worker_id, now_ms() + lease_ms, lease_ms, *fields])

    async def expired_workers(self) -> list[str]:
        found = await self.redis.zrangebyscore(self.keys.workers, "-inf", now_ms(), start=0, num=100)
        return [w.decode() for w in found]

    async def unregistered_holders(self, limit: int = 1000) -> list[str]:
        """Worker ids that have an in-flight hash or a claim list but no registration (no lease will ever expire
        for them). A SCAN of the keyspace: for the rare defensive pass of the reaper, not for a hot path."""
        prefix = self.keys.inflight("")
        found: list[str] = []
        async for key in self.redis.scan_iter(match=prefix + "*", count=1000, _type="hash"):
            found.append(key.decode()[len(prefix) :])
            if len(found) >= limit:
                break
        async for key in self.redis.scan_iter(match=self.keys.claims_prefix + "*", count=1000, _type="list"):
            holder = self.keys.claim_holder(key.decode())[0]
            if holder not in found and len(found) < limit:
                found.append(holder)
        if not found:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in found:
                pipe.zscore(self.keys.workers, worker_id)
            scores = await pipe.execute()
        return [w for w, score in zip(found, scores, strict=True) if score is None]

    async def count(self, field: str, by: int) -> None:
        await self.redis.hincrby(self.keys.stats, field, by)

    async def inflight(self, worker_id: str) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = await self.redis.hgetall(self.keys.inflight(worker_id))
        return found

    async def retire(
        self,
        worker_id: str,
        acks: Sequence[bytes] = (),
        counters: Mapping[str, int] | None = None,
        hooked: Hooked = (),
        claims: Sequence[Taken] = (),
        unclaims: Sequence[tuple[str, bytes]] = (),
        unanswered: tuple[int, Mapping[str, int]] | None = None,
    ) -> int:
        """Record a leaving worker's last claims, settle its last tokens, hand back everything else in its
        in-flight hash and claim lists and drop its registration, atomically; returns how many messages went
        back. Also the last step of recovering a dead worker (with nothing to settle), so no path ever removes
        a lease and leaves its messages. `unanswered`: the sequence number and counters of the worker's last
        exchange if it got no answer, counted only if Redis never applied it (its acks, effects and claims belong
        in the others: applying those twice changes nothing)."""
        acks = await self._settle_excess_acks(worker_id, acks)
        names = self.queue_names
        argv = [
            worker_id,
            self.keys.queue_prefix,
            *names,
            *claims_args(names, claims, unclaims),
            *outbox_args(acks, counters or {}, hooked),
        ]
        seq, late = unanswered if unanswered is not None else ("", {})
        argv += [seq, len(late)]
        for name, count in late.items():
            argv += (name, count)
        keys = [
            self.keys.inflight(worker_id),
            self.keys.stats,
            self.keys.workers,
            self.keys.worker(worker_id),
            self.keys.fence(worker_id),
            *self.queue_keys,
            *self.claim_keys(worker_id),
        ]
        return int(await self._retire(keys=keys, args=argv))

    async def adopt_claims(self, worker_id: str) -> int:
        """Recovering a dead worker: its claim lists (whatever queues it served) join its in-flight hash, so
        their lost attempts are counted like the rest (adopt.lua). A SCAN: for recovery, not a hot path."""
        keys = [key.decode() async for key in self.redis.scan_iter(match=self.keys.claims_of(worker_id) + "*")]
        if not keys:
            return 0
        queues = [self.keys.claim_holder(key)[1] for key in keys]
        return int(await self._adopt(keys=[self.keys.inflight(worker_id), *keys], args=queues))

    async def claimed(self, worker_id: str) -> dict[str, list[bytes]]:
        """Queue name -> what this worker's claim list for it holds (for its reconcile after a lost reply)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.claim_keys(worker_id):
                pipe.lrange(key, 0, -1)
            found = await pipe.execute()
        return dict(zip(self.queue_names, found, strict=True))

    async def unclaim(self, worker_id: str, unclaims: Sequence[tuple[str, bytes]]) -> None:
        """Hand claimed messages this worker never received back to the front of their queues (exchange.lua's
        claim step alone: nothing taken, nothing settled)."""
        names = self.queue_names
        argv = ["", 0, 0, *names, 0, *claims_args(names, (), unclaims), *outbox_args((), {}, ())]
        await self._exchange_call(self._exchange_keys(worker_id), argv)

    async def publish_tables(self) -> None:
        """The task and queue tables clients route by (SPEC §8)."""
        cfg = self.config
        tasks = {
            name: msgpack.packb(
                {
                    "queue": t.queue,
                    "max_retries": t.max_retries,
                    "timeout": t.timeout_s,
                    "result_ttl": t.result_ttl_s,
                    "max_payload": cfg.max_payload_bytes,
                    "max_delay": cfg.max_delay_s,
                    "unique_for": t.unique_for_s,
                    "events": cfg.events_cap if t.events else 0,
                }
            )
            for name, t in cfg.tasks.items()
        }
        for name in cfg.workflows:
            route = {"queue": cfg.queue_of(name), "workflow": True, "max_payload": cfg.max_payload_bytes}
            tasks[name] = msgpack.packb({**route, "max_delay": cfg.max_delay_s})
        queues = {q.name: msgpack.packb({"priority": q.priority, "max_length": q.max_length}) for q in cfg.queues}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.tasks, self.keys.queues)
            pipe.hset(self.keys.tasks, mapping=tasks)
            pipe.hset(self.keys.queues, mapping=queues)
            await pipe.execute()

    async def queue_depths(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.queue_keys:
                pipe.llen(key)
            lengths = await pipe.execute()
        return dict(zip(self.queue_names, (int(n) for n in lengths), strict=True))

    async def undeclared_queues(self, limit: int = 100) -> dict[str, int]:
        """Ready lists (`{p}:queue:<name>`) that no queue of this configuration declares, with their lengths: what
        a producer pushed to a misspelt or removed queue, which no worker will ever take. A SCAN, for status."""
        known, found = set(self.queue_keys), dict[str, int]()
        async for key in self.redis.scan_iter(match=self.keys.queue_prefix + "*", count=1000, _type="list"):
            name = key.decode()
            if name not in known and len(found) < limit:
                found[name[len(self.keys.queue_prefix) :]] = int(await self.redis.llen(name))
        return found

    async def load(self) -> tuple[int, int, float]:
        """(ready + due delayed tasks, live workers of all runners, age of the oldest ready task in s)."""
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.queue_keys:
                pipe.llen(key)
            pipe.zcount(self.keys.delayed, "-inf", now)
            pipe.zcount(self.keys.workers, now, "+inf")
            for key in self.queue_keys:
                pipe.lindex(key, -1)
            replies = await pipe.execute()
        count = len(self.queue_keys)
        pending = sum(int(n) for n in replies[: count + 1])
        stamps = [t for t in (_enqueued_at(raw) for raw in replies[count + 2 :] if raw) if t is not None]
        age = max(0.0, now / 1000 - min(stamps)) if stamps else 0.0
        return pending, int(replies[count + 1]), age

    async def register_runner(self, runner_id: str, info: Mapping[str, Any], lease_s: float) -> None:
        """Register or renew a runner for `lease_s` (its heartbeat renews it, like a worker's lease): a runner
        that dies without unregistering is gone when its lease ends. Drops the expired leases of others."""
        lease_ms = int(lease_s * 1000)
        body = {"host": HOST, "pid": os.getpid(), **info}
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.runners, {runner_id: now + lease_ms})
            pipe.zremrangebyscore(self.keys.runners, "-inf", now)
            pipe.hset(self.keys.runner(runner_id), mapping={k: str(v) for k, v in body.items()})
            pipe.pexpire(self.keys.runner(runner_id), lease_ms)
            await pipe.execute()

    async def unregister_runner(self, runner_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.runners, runner_id)
            pipe.delete(self.keys.runner(runner_id))
            await pipe.execute()

    async def runners(self) -> dict[str, dict[str, str]]:
        """The runners whose lease runs: id -> {host, pid, config, started}."""
        ids = [i.decode() for i in await self.redis.zrangebyscore(self.keys.runners, now_ms(), "+inf")]
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for runner_id in ids:
                pipe.hgetall(self.keys.runner(runner_id))
            found = await pipe.execute()
        return {
            runner_id: {k.decode(): v.decode() for k, v in info.items()}
            for runner_id, info in zip(ids, found, strict=True)
            if info
        }

    async def request_reload(self, request_id: str, runner_ids: Sequence[str]) -> None:
        """Ask those runners to reload (they listen on the reload channel: runner/presence.py)."""
        request = msgpack.packb({"id": request_id, "runners": list(runner_ids)})
        await self.redis.publish(self.keys.reload_channel, request)

    async def answer_reload(self, request_id: str, answer: Mapping[str, Any]) -> None:
        """A runner's receipt or verdict on a reload request, for the CLI that waits on it."""
        key = self.keys.reload_verdicts(request_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, msgpack.packb(dict(answer)))
            pipe.expire(key, RELOAD_ANSWERS_KEPT_S)
            await pipe.execute()

    async def reload_answer(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The next answer on that request, waiting up to `timeout_s` (at most 1 s: below the command
        timeout); None when none came."""
        found = await self.redis.blpop([self.keys.reload_verdicts(request_id)], max(0.01, min(timeout_s, 1.0)))
        return None if found is None else dict(msgpack.unpackb(found[1]))

    async def note_decision(self, runner_id: str, decision: Mapping[str, Any]) -> None:
        """Record a runner's scaling decision: counted in stats, the latest kept for `status`."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.keys.stats, f"autoscaler_{decision['direction']}", 1)
            pipe.hset(self.keys.autoscaler, runner_id, msgpack.packb(dict(decision)))
            await pipe.execute()

    async def decisions(self, max_age_s: float = 86400.0) -> dict[str, dict[str, Any]]:
        """Latest scaling decision of each runner (entries older than `max_age_s` are dropped)."""
        found = {k.decode(): msgpack.unpackb(v) for k, v in (await self.redis.hgetall(self.keys.autoscaler)).items()}
        stale = [k for k, v in found.items() if time.time() - float(v.get("at", 0)) > max_age_s]
        if stale:
            await self.redis.hdel(self.keys.autoscaler, *stale)
        return {k: v for k, v in found.items() if k not in stale}

    async def stats(self) -> dict[str, int]:
        found = await self.redis.hgetall(self.keys.stats)
        return {k.decode(): int(v) for k, v in found.items()}

    async def dead_ids(self, limit: int = 100) -> list[str]:
        return [i.decode() for i in await self.redis.zrevrange(self.keys.dead_index, 0, limit - 1)]

    async def dead_records(self, ids: Sequence[str]) -> list[DeadRecord]:
        if not ids:
            return []
        found = await self.redis.hmget(self.keys.dead, list(ids))
        return [DeadRecord.decode(raw) for raw in found if raw is not None]

    async def drop_dead(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dead, *ids)
            pipe.zrem(self.keys.dead_index, *ids)
            removed, _ = await pipe.execute()
        return int(removed)

    async def revive(self, task_id: str, queue: str, message: bytes, task: str = "") -> bool:
        """Move a dead task back to a ready queue (atomically: never both dead and queued); for a `task` with
        lifecycle events on, with its `enqueued` event."""
        keys = [self.keys.dead, self.keys.dead_index, self.keys.queue(queue)]
        argv: list[Any] = [task_id, message]
        route = self.producer.routes.tasks.get(task)
        if route and route.events:
            argv += (self.keys.events, route.events, task, queue, self.keys.stats)
        return bool(await self._revive(keys=keys, args=argv))

    async def fire(
        self,
        schedule: str,
        queue: str,
        fire_ms: int,
        next_ms: int,
        message: bytes | None,
        hold: Sequence[Any] = (),
        event: tuple[str, str] | None = None,
    ) -> bool:
        """Fire (or, with no message, skip) one schedule time; False when another runner already did.
        `hold` (Producer.hold) makes a fire of a unique task a duplicate while an equal task is there; `event`
        (task id, task name) writes the fire's `enqueued` event when that task has lifecycle events on."""
        keys = [self.keys.schedules, self.keys.queue(queue), self.keys.stats]
        mode = "fire" if message is not None else "skip"
        counted = stat_field("enqueued", queue, event[1] if event else "(unknown)")
        argv: list[Any] = [schedule, fire_ms, next_ms, mode, message or b"", counted, *hold]
        route = self.producer.routes.tasks.get(event[1]) if event else None
        if event and route and route.events and message is not None:
            argv += [""] * (13 - len(argv))  # no unique hold: its seven places stay empty
            argv += (self.keys.events, route.events, *event, queue)
        return bool(await self._fire(keys=keys, args=argv))

    async def schedule_state(self) -> dict[str, int]:
        found = await self.redis.hgetall(self.keys.schedules)
        return {k.decode(): int(v) for k, v in found.items()}

    async def live_workers(self) -> list[dict[str, str]]:
        ids = await self.redis.zrangebyscore(self.keys.workers, now_ms(), "+inf")
        async with self.redis.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hgetall(self.keys.worker(wid.decode()))
            infos = await pipe.execute()
        return [
            {"id": wid.decode(), **{k.decode(): v.decode() for k, v in info.items()}}
            for wid, info in zip(ids, infos, strict=True)
        ]

    async def workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """A workflow's state and its steps' (Client.workflow), or None when unknown or expired."""
        found: dict[str, Any] | None = await lookup.arun(
            lookup.workflow(self.keys, workflow_id), self.redis, self._lookups
        )
        return found

    async def recent_workflows(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest workflows still kept: {id, state, steps, left, failed, created}; ids whose hash
        expired (after their result_ttl) are dropped from the index as they are met."""
        ids = [i.decode() for i in await self.redis.zrevrange(self.keys.workflows, 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for workflow_id in ids:
                pipe.hmget(self.keys.workflow(workflow_id), "state", "steps", "left", "failed", "created")
            found = await pipe.execute() if ids else []
        out, gone = [], []
        for workflow_id, (state, steps, left, failed, created) in zip(ids, found, strict=True):
            if state is None:
                gone.append(workflow_id)
                continue
            out.append(
                {
                    "id": workflow_id,
                    "state": state.decode(),
                    "steps": int(steps),
                    "done": int(steps) - int(left),
                    "failed": int(failed or 0),
                    "created": float(created),
                }
            )
        if gone:
            await self.redis.zrem(self.keys.workflows, *gone)
        return out

    async def dead_count(self) -> int:
        return int(await self.redis.zcard(self.keys.dead_index))

    async def delayed_count(self) -> int:
        return int(await self.redis.zcard(self.keys.delayed))

    # ---- read-only views for /health, /metrics and the JSON API (web.py, metrics.py) -------------
    async def earliest_delayed_ms(self) -> int | None:
        """Due time (ms) of the earliest delayed task, or None when none waits."""
        found = await self.redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        return int(found[0][1]) if found else None

    async def oldest_ready(self) -> dict[str, bytes | None]:
        """Each queue's oldest ready message (the right end of its list: producers LPUSH), or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.queue_keys:
                pipe.lindex(key, -1)
            found = await pipe.execute()
        return dict(zip(self.queue_names, found, strict=True))

    async def worker_rows(self, also: Sequence[str] = ()) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        """For the dashboard, read now: every lease (worker id → deadline, ms), and for each worker with a live
        lease plus each of `also` (this runner's processes, registered or not) its heartbeat info and
        `in_flight`, the size of its in-flight hash this moment (the heartbeat's `active` is up to one
        heartbeat old). Two round trips: the leases, then one pipeline."""
        found = await self.redis.zrange(self.keys.workers, 0, -1, withscores=True)
        leases = {w.decode(): int(score) for w, score in found}
        now = now_ms()
        ids = [w for w, deadline in leases.items() if deadline >= now]
        ids += [w for w in also if w not in ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hgetall(self.keys.worker(wid))
                pipe.hlen(self.keys.inflight(wid))
            answers = await pipe.execute() if ids else []
        rows = {
            wid: {**{k.decode(): v.decode() for k, v in info.items()}, "in_flight": int(held)}
            for wid, info, held in zip(ids, answers[::2], answers[1::2], strict=True)
        }
        return leases, rows

    async def backlog(self) -> Backlog:
        """The deployment's work per queue (ready, due delayed, running) and its live workers' slots, read in one
        script when asked (/tasks/load, /metrics): nothing is counted on a task's path for it."""
        keys = self.keys
        argv = [now_ms(), BACKLOG_DUE_READ, keys.queue_prefix, keys.worker(""), keys.inflight(""), keys.claims_prefix]
        replies = await self._backlog(keys=[keys.delayed, keys.workers], args=[*argv, *self.queue_names])
        found = [int(n) for n in replies]
        per_queue = {
            name: (found[3 + 3 * i], found[4 + 3 * i], found[5 + 3 * i]) for i, name in enumerate(self.queue_names)
        }
        return Backlog(workers=found[0], slots=found[1], due_unread=found[2], queues=per_queue)

    async def worker_leases(self) -> dict[str, int]:
        """Worker id → lease deadline (ms) of every registered worker; deadline - lease = last heartbeat."""
        found = await self.redis.zrange(self.keys.workers, 0, -1, withscores=True)
        return {w.decode(): int(score) for w, score in found}


def _enqueued_at(raw: bytes) -> float | None:
    try:
        return envelope.decode(raw, len(raw)).enqueued_at
    except envelope.InvalidEnvelope:
        return None
