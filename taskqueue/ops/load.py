"""The load figure an external autoscaler (a Kubernetes HPA, KEDA) scales the workers' pods on (SPEC §17):
(ready + due delayed + running) / worker slots of the deployment, per queue and overall, read when asked.

Slots are those of every live worker process of every runner (their registrations' `slots`). With no live
worker the figure is the work itself (divided by one slot): any work reads as at least 1, so an autoscaler
that scaled to zero scales up again, and no work reads 0. A queue's figure divides its work by every slot:
the workers serve every queue, so the queue figures add up to the overall one."""

from __future__ import annotations

from typing import Any

from taskqueue.store.broker import Backlog, Broker


async def read(broker: Broker) -> dict[str, Any]:
    """`{"load", "work", "slots", "workers", "queues": {name: {"load", "ready", "delayed_due", "running"}}}`."""
    return figures(await broker.backlog())


def figures(backlog: Backlog) -> dict[str, Any]:
    divisor = max(backlog.slots, 1)
    queues = {
        name: {
            "load": round((ready + due + running) / divisor, 4),
            "ready": ready,
            "delayed_due": due,
            "running": running,
        }
        for name, (ready, due, running) in backlog.queues.items()
    }
    work = sum(ready + due + running for ready, due, running in backlog.queues.values()) + backlog.due_unread
    return {
        "load": round(work / divisor, 4),
        "work": work,
        "slots": backlog.slots,
        "workers": backlog.workers,
        "delayed_due_unattributed": backlog.due_unread,
        "queues": queues,
    }
