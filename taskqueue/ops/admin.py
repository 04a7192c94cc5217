"""Operations the CLI and the HTTP API share: the status overview and re-running dead tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskqueue import envelope
from taskqueue.runner import schedules as scheduler
from taskqueue.store import eventlog
from taskqueue.store.broker import Broker

COUNTERS = ("processed", "failed", "retried", "dead")


async def status(broker: Broker) -> dict[str, Any]:
    """Queues (pending and counters), delayed and dead-letter sizes, live workers of every runner."""
    depths = await broker.queue_depths()
    stats = await broker.stats()
    queues = []
    for name in broker.queue_names:
        counts = {c: sum(v for k, v in stats.items() if k.startswith(f"{c}:{name}:")) for c in COUNTERS}
        queues.append({"name": name, "pending": depths[name], **counts})
    found = {
        "queues": queues,
        "undeclared_queues": await broker.undeclared_queues(),
        "schedules": scheduler.describe(broker.config, await broker.schedule_state(), stats),
        "delayed": await broker.delayed_count(),
        "dead": await broker.dead_count(),
        "workers": await broker.live_workers(),
        "autoscaler": await broker.decisions(),
    }
    if broker.config.webhooks:  # deliveries of all runners; undeliverable ones kept for `webhooks retry`
        outcomes = ("delivered", "failed", "undeliverable", "lost")
        backlogs = await eventlog.backlogs(broker.redis, broker.keys.events)  # held in the stream for each
        found["webhooks"] = [
            {
                "name": h.name,
                "url": h.url,
                **{o: stats.get(f"webhook_{o}:{h.name}", 0) for o in outcomes},
                "backlog": backlogs.get(f"webhook:{h.name}"),
            }
            for h in broker.config.webhooks
        ]
        found["webhook_events_kept"] = int(await broker.redis.zcard(broker.keys.webhooks_dead_index))
    return found


async def retry_dead(broker: Broker, ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Enqueue dead tasks again with their attempts reset; returns (re-enqueued ids, problems)."""
    done: list[str] = []
    problems: list[str] = []
    for record in await broker.dead_records(ids):
        if record.truncated:
            problems.append(f"{record.id}: cannot retry, the message was too large to keep whole")
            continue
        try:
            env = envelope.decode(record.message, broker.config.max_payload_bytes)
            env.attempt = 0
            message = env.encode()
        except envelope.InvalidEnvelope:
            message = record.message  # looked at again by a worker (e.g. after the YAML gained the task)
        queue = record.queue if record.queue in broker.queue_names else broker.queue_names[-1]
        if await broker.revive(record.id, queue, message, record.task):
            done.append(record.id)
    missing = set(ids) - {r.id for r in await broker.dead_records(ids)} - set(done)
    problems += [f"{i}: not in the dead-letter store" for i in sorted(missing)]
    return done, problems


async def enqueue(
    broker: Broker, task: str, args: Sequence[Any], kwargs: dict[str, Any], queue: str | None, delay_s: float
) -> tuple[str, str]:
    """Enqueue one declared task for the CLI and the HTTP API through the producer; returns (task id, queue).
    Raises UnknownTask (task or queue), PayloadTooLarge, QueueFull, or ValueError (not encodable)."""
    ids, pushes = broker.producer.plan([(task, args, kwargs)], queue=queue, delay_s=delay_s)
    await broker.send(pushes, task=task, ids=ids)
    return ids[0], pushes[0].queue
