"""Bringing back the messages of a worker that died: its lost attempt counts, so a task that keeps killing
its worker ends in the dead-letter store instead of looping."""

from __future__ import annotations

import logging
import time

from taskqueue import envelope
from taskqueue.broker import Broker, DeadRecord
from taskqueue.keys import split_member
from taskqueue.stats import field as stat_field

log = logging.getLogger("taskqueue.recovery")


async def recover_worker(broker: Broker, worker_id: str) -> tuple[int, int]:
    """Re-queue (or dead-letter) everything `worker_id` held; returns (re-queued, dead-lettered)."""
    requeued = buried = 0
    config = broker.config
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
            record = DeadRecord(
                env.id,
                env.task,
                queue,
                raw,
                False,
                error,
                "",
                env.attempt,
                env.enqueued_at,
                time.time(),
                worker_id,
            )
            stats = [stat_field("failed", queue, env.task), stat_field("dead", queue, env.task)]
            if await broker.bury(worker_id, token, record, stats):
                buried += 1
                log.warning("dead-lettered: %s", error, extra=fields)
        elif await broker.requeue(worker_id, token, queue, env.encode() if task else raw):
            requeued += 1
            log.info("re-queued a task of lost worker %s", worker_id, extra=fields)
    await broker.forget_worker(worker_id)
    return requeued, buried
