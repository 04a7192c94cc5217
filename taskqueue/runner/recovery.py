"""Bringing back the messages of a worker that died: its lost attempt counts, so a task that keeps killing
its worker ends in the dead-letter store instead of looping."""

from __future__ import annotations

import logging

from taskqueue import envelope
from taskqueue.features.events import Events
from taskqueue.store.broker import Broker, DeadRecord
from taskqueue.store.keys import split_member
from taskqueue.store.stats import ORPHANS_FIELD
from taskqueue.store.stats import field as stat_field

log = logging.getLogger("taskqueue.recovery")


class OrphanWatch:
    """Defence in depth: an in-flight hash whose worker is not registered has no lease that could expire,
    so no other recovery would ever look at it. No code path should leave one (a worker retires in one
    atomic step); if one appears anyway, it is recovered like a dead worker's once it is seen on two
    passes in a row (a worker that is merely late re-registers with its next heartbeat)."""

    def __init__(self) -> None:
        self.suspects: set[str] = set()

    async def check(self, broker: Broker) -> int:
        """One pass; returns how many tasks came back."""
        found = set(await broker.unregistered_holders())
        confirmed, self.suspects = found & self.suspects, found - self.suspects
        total = 0
        for worker_id in sorted(confirmed):
            requeued, buried = await recover_worker(broker, worker_id)
            total += requeued + buried
            log.warning(
                "worker %s held tasks in flight but was not registered: %d re-queued, %d dead-lettered",
                worker_id,
                requeued,
                buried,
                extra={"worker": worker_id},
            )
        if total:
            await broker.count(ORPHANS_FIELD, total)
        return total


async def recover_worker(broker: Broker, worker_id: str) -> tuple[int, int]:
    """Re-queue (or dead-letter) everything `worker_id` held; returns (re-queued, dead-lettered)."""
    requeued = buried = 0
    config = broker.config
    await broker.adopt_claims(worker_id)  # what its idle watchers took and may have started: held like the rest
    for token, member in (await broker.inflight(worker_id)).items():
        queue, raw = split_member(member)
        try:
            env = envelope.decode(raw, config.max_payload_bytes)
        except envelope.InvalidEnvelope:
            requeued += await broker.requeue(worker_id, token, queue, raw)  # a worker will dead-letter it
            continue
        task = config.tasks.get(env.task)
        env.attempt += 1  # the attempt that was running when the worker died
        limit = env.max_retries if env.max_retries is not None else (task.max_retries if task else 0)
        fields = {"task_id": env.id, "task": env.task, "queue": queue, "attempt": env.attempt}
        if task is not None and env.attempt > limit:
            error = f"worker {worker_id} died while running it ({env.attempt} attempts, max_retries {limit})"
            record = DeadRecord.now(
                env.id, env.task, queue, raw, error, env.attempt, worker_id, enqueued_at=env.enqueued_at
            )
            stats = [stat_field("failed", queue, env.task), stat_field("dead", queue, env.task)]
            # its `failed` event, when its task has events on (the lost attempt was its last)
            events = Events(broker.keys, config.events_cap)
            effects = [events.effect("dead", env, queue, env.attempt, error)] if task.events else []
            if await broker.bury(worker_id, token, record, stats, effects):
                buried += 1
                log.warning("dead-lettered: %s", error, extra=fields)
        elif await broker.requeue(worker_id, token, queue, env.encode() if task else raw):
            requeued += 1
            log.info("re-queued a task of lost worker %s", worker_id, extra=fields)
    requeued += await broker.retire(worker_id)  # anything it took meanwhile, and its registration
    return requeued, buried
