"""One worker process: take as many tasks as it has free slots, settle them, keep its lease alive.

This is the worker's lifecycle and its one conversation with Redis about task state (the pump); running
the tasks themselves is `taskqueue.execute`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisClusterException, RedisError

from taskqueue import envelope
from taskqueue._loop import outage, raise_if_cancelled, ride_out
from taskqueue.config import Config
from taskqueue.config.registry import Registry
from taskqueue.store.broker import HOST, Broker, Hooked, Taken
from taskqueue.store.keys import split_member
from taskqueue.store.stats import RETIREMENTS_PREFIX
from taskqueue.worker.execute import Executor

log = logging.getLogger("taskqueue.worker")

WATCH_BLOCK_S = 2.0
STOP_WAIT_S = 2.0  # how long cancelled coroutines get to finish at shutdown
LEASE_HEARTBEATS = 3  # a worker silent for this many heartbeat intervals is presumed dead
EXIT_RECYCLED = 76  # "retired, replace me now": max_tasks_per_child or max_memory_per_child was reached
EXIT_BROKEN = 70  # one of the worker's loops failed unexpectedly: it retired, the runner starts another
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

Recycle = Literal["max_tasks", "max_memory"]


def lease_s(config: Config) -> float:
    return config.workers.heartbeat_interval_s * LEASE_HEARTBEATS


def rss_bytes() -> int:
    """This process's resident memory now (/proc/self/statm); without /proc, its peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


class Worker:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        broker: Broker,
        watch: Any,
        worker_id: str,
        runner_pid: int | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.broker = broker
        self.watch = watch  # connections that may block (BLMOVE into our claim lists), apart from the broker's
        self.id = worker_id
        # The runner that started us (given by it: a parent that died before we looked is pid 1 already).
        self.runner_pid = runner_pid if runner_pid is not None else os.getppid()
        self.slots = config.workers.max_concurrent_tasks
        self.wake = asyncio.Event()
        self.armed = asyncio.Event()
        self.executor = Executor(config, registry, broker, worker_id, self.wake)
        self.stopping = False  # take nothing more
        self.closing = asyncio.Event()  # and leave the pump loop
        self.idle = asyncio.Event()  # the pump has no round trip under way
        self.idle.set()
        self.tokens = 0  # the exchange's tokens are numbers; a claim's are "c<n>" (never the same token twice)
        self.claim_tokens = 0
        self.reserved = 0  # slots the exchange under way may fill: a watcher's claim must leave them free
        self.seq = 0  # the number of this worker's latest request that takes or counts (exchange.lua's fence)
        self.unanswered: Request | None = None  # a request sent without an answer: sent again as it is
        self.broken = asyncio.Event()  # one of the worker's loops ended on an unexpected error: stop
        self.audit_at = 0.0  # when the pump next compares Redis' record of what it holds with what it runs
        self._strays: collections.Counter[tuple[str, bytes]] = collections.Counter()  # seen once in claim lists
        self._pump_failed = False
        self._primary_moves = 0
        self.max_tasks = config.workers.max_tasks_per_child
        self.max_memory = config.workers.max_memory_per_child_bytes
        self.recycled: Recycle | None = None  # why this process retires by itself, if it does
        self.recycling = asyncio.Event()

    @property
    def exit_code(self) -> int:
        code = self.executor.exit_code
        if code == 0 and self.broken.is_set():
            return EXIT_BROKEN
        return EXIT_RECYCLED if code == 0 and self.recycled else code

    # ---- lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, fast_stop: asyncio.Event) -> int:
        """Work until `stop`; then finish running tasks within the grace period and hand back the rest."""
        await ride_out(self._heartbeat_once, "registering this worker")  # Redis away at start: wait, no traceback
        self.executor.attach()
        cancels_known = asyncio.Event()
        helpers = [asyncio.create_task(self._follow_cancels(cancels_known))]
        await asyncio.wait([asyncio.create_task(cancels_known.wait())], timeout=STOP_WAIT_S)  # before taking any
        pump = asyncio.create_task(self._pump())
        helpers.append(asyncio.create_task(self._heartbeat()))
        helpers += [asyncio.create_task(self._watch(q)) for q in self.broker.queue_names]
        for loop_task in (pump, *helpers):
            loop_task.add_done_callback(self._loop_ended)
        self.wake.set()  # the pump's first exchange arms the watchers if the queues are dry (strict priority)
        await _first(stop, self.recycling, self.broken)
        self.stopping = True  # the pump takes nothing more; it keeps acknowledging what finishes
        self.wake.set()
        # What a round trip under way brings still starts, and gets the grace period like the rest.
        idle = asyncio.create_task(self.idle.wait())
        await asyncio.wait([idle], timeout=STOP_WAIT_S)
        idle.cancel()
        grace = self.config.workers.shutdown_grace_period_s if self.executor.exit_code == 0 else 0.0
        running = [h.job for h in self.executor.held.values() if h.job]
        if running:
            log.info("stopping: waiting up to %.1fs for %d running task(s)", grace, len(running))
            # until every running task is done, the grace period is over, or a second signal says hurry
            finished = asyncio.create_task(asyncio.wait(running))
            fast = asyncio.create_task(fast_stop.wait())
            await asyncio.wait([finished, fast], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            fast.cancel()
        await self._cancel_running()
        await self._stop_pump(pump)
        for helper in helpers:
            helper.cancel()
        await asyncio.wait(helpers, timeout=STOP_WAIT_S)
        if self.recycled:
            self.executor.counters[RETIREMENTS_PREFIX + self.recycled] += 1  # counted by retire.lua, atomically
        await self._retire()
        self.executor.close()
        log.info("worker stopped", extra={"worker": self.id})
        return self.exit_code

    def _loop_ended(self, loop_task: asyncio.Task[None]) -> None:
        """A loop of this worker (pump, heartbeat, watcher, cancel follower) must run until it is told to stop: one
        that ends on an error nobody expected would leave the worker alive, heartbeating and holding tasks it no
        longer settles. It retires instead (its tasks go back) and the runner starts another."""
        if loop_task.cancelled() or self.closing.is_set():
            return
        exc = loop_task.exception()
        if exc is None:
            return
        log.error(
            "a worker loop failed (%s): retiring this worker, its tasks go back to their queues",
            loop_task.get_coro().__qualname__,  # type: ignore[union-attr]
            exc_info=exc,
            extra={"worker": self.id},
        )
        self.broken.set()

    def _recycle(self, reason: Recycle, detail: str) -> None:
        """Retire by ourselves, exactly as on a scale-down; the runner starts a replacement at once."""
        if self.stopping or self.recycled:
            return
        self.recycled = reason
        log.info(
            "worker %s retiring (%s): %d task(s) done, %s",
            self.id,
            reason,
            self.executor.finished,
            detail,
            extra={"worker": self.id},
        )
        self.recycling.set()

    def _task_budget(self, max_tasks: int) -> int:
        """How many more tasks this process may take (never more than max_tasks_per_child run here in all);
        once they are all done, it retires."""
        left = max_tasks - self.executor.finished - len(self.executor.held)
        if self.executor.finished >= max_tasks:
            self._recycle("max_tasks", f"max_tasks_per_child {max_tasks}")
        return left

    def _check_memory(self, max_memory: int) -> None:
        rss = rss_bytes()
        if rss > max_memory:
            self._recycle("max_memory", f"RSS {rss >> 20} MiB > max_memory_per_child {max_memory >> 20} MiB")

    async def _cancel_running(self) -> None:
        """Cancel what still runs; its message goes back with the rest of the in-flight hash at retirement."""
        jobs = [h.job for h in self.executor.held.values() if h.job and not h.job.done()]
        for job in jobs:
            job.cancel(msg="hand back")
        if jobs:  # a task body may swallow its cancellation: do not wait for it forever
            await asyncio.wait(jobs, timeout=STOP_WAIT_S)

    async def _stop_pump(self, pump: asyncio.Task[None]) -> None:
        """Let the pump leave between two round trips, so a reply is never cut off; cancel it only when it
        cannot finish one (Redis unreachable). Either way the in-flight hash still says what we held."""
        self.closing.set()
        self.wake.set()
        await asyncio.wait([pump], timeout=STOP_WAIT_S)
        if not pump.done():
            pump.cancel()
            await asyncio.wait([pump], timeout=STOP_WAIT_S)

    async def _retire(self) -> None:
        """One atomic step: the last acks and counters, every message still in the in-flight hash back to
        its queue (running or just taken, received or not), the registration gone. If Redis cannot be
        reached, the registration stays and its lease expires: recovery then brings the messages back."""
        out, last = self.executor, self.unanswered
        acks, claims, unclaims = out.acks, out.claims, out.unclaims
        hooked: Hooked = out.hooked
        if last is not None:  # what it took goes back with the rest; its counters only if it was not applied
            acks, hooked = [*last.acks, *acks], [*last.hooked, *hooked]
            claims, unclaims = [*last.claims, *claims], [*last.unclaims, *unclaims]
        late = (last.seq, last.counters) if last is not None and last.seq is not None else None
        try:
            handed = await self.broker.retire(self.id, acks, out.counters, hooked, claims, unclaims, late)
        except RedisError as exc:
            log.warning(
                "could not hand back this worker's tasks (%s); they return when its lease expires (%.1fs)",
                exc,
                lease_s(self.config),
                extra={"worker": self.id},
            )
            return
        out.acks, out.hooked = [], []
        out.counters.clear()
        out.recorded(claims)
        out.claims, out.unclaims = [], []
        self.unanswered = None
        for held in self.executor.held.values():  # one line per task we were running, with its id
            task_id, task = envelope.identify(held.raw)
            log.info(
                "handed back a task that had not finished",
                extra={"task_id": task_id, "task": task, "queue": held.queue},
            )
        self.executor.held.clear()
        if handed:
            log.info("handed back %d message(s) in all", handed, extra={"worker": self.id})

    async def _heartbeat_once(self) -> None:
        info = {
            "host": HOST,
            "pid": os.getpid(),
            "slots": self.slots,
            "active": len(self.executor.held),
            "started": getattr(self, "_started", time.time()),
            "runner_pid": self.runner_pid,
        }
        self._started = info["started"]
        await self.broker.heartbeat(self.id, info, lease_s(self.config))

    async def _heartbeat(self) -> None:
        interval = self.config.workers.heartbeat_interval_s
        while True:
            raise_if_cancelled()
            if os.getppid() != self.runner_pid:
                log.warning("the runner process went away: stopping")
                os.kill(os.getpid(), 15)
                return
            await asyncio.sleep(min(interval, 0.5))
            if time.monotonic() - getattr(self, "_beat_at", 0.0) < interval:
                continue
            if self.max_memory is not None and not self.stopping:
                self._check_memory(self.max_memory)  # once per heartbeat, never per task
            try:
                await self._heartbeat_once()
                self._beat_at = time.monotonic()
                outage.answered()
                if time.monotonic() >= self.audit_at:
                    self.wake.set()  # an idle pump audits too
            except RedisError as exc:
                outage.failed("renewing this worker's lease", exc)

    async def _follow_cancels(self, known: asyncio.Event) -> None:
        """Keep the executor's copy of the cancelled ids: subscribe to the cancel channel, then read the set
        (so no cancel falls between the two), again after every reconnection."""
        while True:
            raise_if_cancelled()
            pubsub = self.broker.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.broker.keys.cancel_channel)
                self.executor.cancel(await self.broker.load_cancelled())
                known.set()
                async for message in pubsub.listen():
                    data = message.get("data")
                    if isinstance(data, bytes):
                        self.executor.cancel([data.decode("utf-8", "replace")])
            except (RedisError, RedisClusterException, OSError):
                known.set()  # Redis away: the pump cannot take anything either; we read the set again when back
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await pubsub.aclose()

    # ---- taking work -------------------------------------------------------------------------------
    async def _watch(self, queue: str) -> None:
        """While the queues are dry: block on one ready list, and take what arrives straight into this worker's
        claim list for it (BLMOVE), so it starts now; the pump's next exchange records it in the in-flight
        hash and takes whatever else is ready. An idle worker starts a task one round trip after its push."""
        key, claims = self.broker.keys.queue(queue), self.broker.keys.claim(self.id, queue)
        while True:
            raise_if_cancelled()
            await self.armed.wait()
            try:
                found = await self.watch.blmove(key, claims, WATCH_BLOCK_S, "RIGHT", "LEFT")
            except RedisError as exc:
                outage.failed(f"watching queue {queue}", exc)
                self._pump_failed = True  # a reply may be lost with a message in our claim list: reconcile
                self.armed.clear()  # and the exchange takes again meanwhile (it re-arms us if the queues are dry)
                await asyncio.sleep(0.5)
                self.wake.set()  # let the pump find out whether Redis is back
                continue
            if found is not None:
                self.armed.clear()
                self._claimed(queue, found)

    def _claimed(self, queue: str, raw: bytes) -> None:
        out = self.executor
        free = self.slots - len(out.held) - self.reserved
        if self.max_tasks is not None:
            free = min(free, self.max_tasks - out.finished - len(out.held) - self.reserved)
        if self.stopping or free <= 0:  # another watcher, or the exchange under way, has the last slot
            out.unclaims.append((queue, raw))
            self.wake.set()
            return
        self.claim_tokens += 1
        out.claim(Taken(b"c%d" % self.claim_tokens, queue, raw))

    async def _pump(self) -> None:
        """The worker's single conversation about task state: ack, count, take (one round trip each time)."""
        delay = 0.05
        while True:
            raise_if_cancelled()
            await self.wake.wait()
            self.wake.clear()
            if self.closing.is_set():
                return
            # while the watchers wait for work, they take it: an exchange taking too could take younger messages
            # and start them before a watcher's older one (FIFO, which the limits' waiting lists keep)
            want = 0 if self.stopping or self.armed.is_set() else max(0, self.slots - len(self.executor.held))
            if self.max_tasks is not None:
                want = max(0, min(want, self._task_budget(self.max_tasks)))  # one comparison per round trip
            audit = time.monotonic() >= self.audit_at
            if want <= 0 and not self.executor.pending_outbox() and self.unanswered is None and not audit:
                continue
            try:
                self.idle.clear()
                try:
                    request = self.unanswered or self._request(want)
                    taken = await self._exchange(request)
                finally:
                    self.idle.set()
                if self.closing.is_set():
                    return  # what this round took stays in the in-flight hash: retirement hands it back
                for item in taken:  # held before any reconcile: they are ours, not strays
                    self.executor.start(item)
                delay = 0.05
                outage.answered()
                moves = getattr(getattr(self.broker.redis, "connection_pool", None), "primary_changes", 0)
                if self._pump_failed or moves != self._primary_moves or audit:  # a failover may lose replies too
                    self._pump_failed, self._primary_moves = False, moves
                    self.audit_at = time.monotonic() + lease_s(self.config)
                    await self._reconcile()
            except RedisError as exc:
                outage.failed("exchanging tasks (ack, count, take)", exc)
                self._pump_failed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self.wake.set()
                continue
            if request.want > 0 and len(taken) < request.want:
                self.armed.set()  # queues ran dry: let the watchers tell us when work arrives

    def _request(self, want: int) -> Request:
        """The next request: the outbox as it is now, and `want` new messages."""
        out = self.executor
        counters = dict(out.counters)
        fenced = bool(want or counters)  # a request that only acks and records claims may be applied twice
        if fenced:
            self.seq += 1
        request = Request(
            self.seq if fenced else None, want, self.tokens, out.acks, counters, out.hooked, out.claims, out.unclaims
        )
        self.tokens += want
        out.acks, out.hooked, out.claims, out.unclaims = [], [], [], []
        out.counters.clear()
        return request

    async def _exchange(self, request: Request) -> list[Taken]:
        """Send `request` until it is answered: one that failed is sent again as it was (same number, same
        tokens, same outbox), for Redis may have applied it and only the answer was lost; exchange.lua applies a
        request once and answers a repeat with what it took. Until then the outbox waits for the next request."""
        self.unanswered = request
        self.reserved = request.want
        try:
            taken = await self.broker.exchange(
                self.id, *request.outbox, request.want, request.base, request.claims, request.unclaims, request.seq
            )
        except BaseException:
            self.reserved = 0
            raise
        self.unanswered = None
        self.reserved = 0  # the pump starts what it took before it yields again
        if request.claims:
            self.executor.recorded(request.claims)
        return taken

    async def _reconcile(self) -> None:
        """Compare what Redis records for this worker with what it runs, after a failed round trip and once per
        lease: hand back messages Redis holds for us that we never received (a late request, a lost reply; a
        watcher's BLMOVE whose reply was lost). Finished tasks whose ack is still pending are ours, and so are
        claims not yet recorded. A message in a claim list that we do not know of is handed back when it is still
        there one audit later (a watcher's reply may be on its way)."""
        for token, member in (await self.broker.inflight(self.id)).items():
            # checked now, not before an await: a task may finish (its ack still pending) at any await
            if token not in self.executor.held and token not in self.executor.unsent():
                queue, raw = split_member(member)
                task_id, task = envelope.identify(raw)
                if await self.broker.requeue(self.id, token, queue, raw):
                    log.warning(
                        "handed back a task recorded for this worker that it never received",
                        extra={"task_id": task_id, "task": task, "queue": queue, "worker": self.id},
                    )
        in_claim_lists = await self.broker.claimed(self.id)
        mine = collections.Counter((item.queue, item.raw) for item in self.executor.claims)  # after the await
        mine.update(self.executor.unclaims)
        if self.unanswered is not None:
            mine.update((item.queue, item.raw) for item in self.unanswered.claims)
            mine.update(self.unanswered.unclaims)
        found: collections.Counter[tuple[str, bytes]] = collections.Counter()
        for queue, raws in in_claim_lists.items():
            found.update((queue, raw) for raw in raws)
        unknown = found - mine
        strays = unknown & self._strays  # seen at the last audit too
        self._strays = unknown - strays
        if strays:
            await self.broker.unclaim(self.id, list(strays.elements()))
            log.warning("handed back %d claimed message(s) this worker never received", strays.total())


@dataclass(frozen=True, slots=True)
class Request:
    """One exchange as the worker sent it: kept until it is answered, and sent again as it was."""

    seq: int | None  # None: it only acks and records claims (may be applied twice)
    want: int
    base: int  # its takes get tokens base+1 .. base+want
    acks: list[bytes]
    counters: dict[str, int]
    hooked: Hooked
    claims: list[Taken]
    unclaims: list[tuple[str, bytes]]

    @property
    def outbox(self) -> tuple[list[bytes], dict[str, int], Hooked]:
        return self.acks, self.counters, self.hooked


async def _first(*events: asyncio.Event) -> None:
    """Until one of `events` is set."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
