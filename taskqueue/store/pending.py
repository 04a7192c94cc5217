"""What a deployment still has to do: ready, delayed and due, waiting on a limit, in flight (pending.lua).
The drain condition of taskqueue.testing; one atomic read, so no message is missed while it moves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskqueue.store import scripts
from taskqueue.store.keys import Keys


@dataclass(frozen=True, slots=True)
class Pending:
    ready: dict[str, int]  # queue name -> messages in its ready list
    due: int  # delayed messages (delays, retries) due before the horizon
    delayed: int  # delayed messages in all
    waiting: int  # messages held back by a rate or concurrency limit
    inflight: int  # messages taken by a worker and not settled yet (running, or about to be acknowledged)

    @property
    def empty(self) -> bool:
        """Nothing to do before the horizon: later delayed messages do not count."""
        return not (any(self.ready.values()) or self.due or self.waiting or self.inflight)

    def describe(self) -> str:
        """`3 ready (default: 2, high_priority: 1), 1 delayed and due, 2 in flight`."""
        parts = []
        ready = {q: n for q, n in self.ready.items() if n}
        if ready:
            per_queue = ", ".join(f"{q}: {n}" for q, n in ready.items())
            parts.append(f"{sum(ready.values())} ready ({per_queue})")
        if self.due:
            parts.append(f"{self.due} delayed and due")
        if self.waiting:
            parts.append(f"{self.waiting} waiting on a rate or concurrency limit")
        if self.inflight:
            parts.append(f"{self.inflight} in flight (running)")
        if self.delayed > self.due:
            parts.append(f"{self.delayed - self.due} delayed beyond the horizon (not waited for)")
        return ", ".join(parts) or "nothing"


class PendingReader:
    """Reads Pending through a synchronous redis-py client."""

    def __init__(self, client: Any, keys: Keys, queues: Sequence[str]) -> None:
        self.keys = keys
        self.queues = tuple(queues)
        self._script = client.register_script(scripts.source("pending"))

    def read(self, horizon_ms: int) -> Pending:
        k = self.keys
        script_keys = [k.delayed, k.limits_waiting, k.workers, *(k.queue(q) for q in self.queues)]
        args = [k.inflight(""), horizon_ms, k.claims_prefix, *self.queues]
        due, delayed, waiting, inflight, *ready = self._script(keys=script_keys, args=args)
        per_queue = dict(zip(self.queues, map(int, ready), strict=True))
        return Pending(per_queue, int(due), int(delayed), int(waiting), int(inflight))
