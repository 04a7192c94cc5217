"""Lifecycle events (SPEC §13) on the worker's side: a task with events on (its own `events:`, else the top-level
`events.enabled`) writes `succeeded`, `retried`, `failed` (dead-lettered) or `cancelled` to the `{p}:events`
stream inside the settle script that acknowledges, retries or buries it (lua/hooks/event.lua) — so the event
exists exactly when the change happened, and not at all when another worker had recovered the task meanwhile.
`started` is written by exchange.lua as it takes the message, `enqueued` by the producer's push
(store/producer.py), `workflow_finished` by the workflow hook (lua/hooks/workflow.lua).

Entry fields (all strings, any language can read them with XREAD): `event`, `id`, `task`, `queue`, `attempt`
(1 for the first run), `at` (ms since the epoch, Redis' clock), `error` (retried, failed, cancelled) and
`workflow` (the workflow id, for a workflow's step; and for workflow_finished, with `state`)."""

from __future__ import annotations

from typing import Any

from taskqueue.envelope import Envelope
from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.eventlog import EVENT_NAMES
from taskqueue.store.keys import Keys
from taskqueue.store.producer import WORKFLOW_ID_PREFIX

__all__ = ["EVENT_NAMES", "Events", "workflow_of"]
_SETTLED = {"ok": "succeeded", "retry": "retried", "dead": "failed", "cancelled": "cancelled"}
MAX_ERROR = 2000  # characters of an error kept in an event (the dead-letter record keeps it all)


def workflow_of(task_id: str) -> str | None:
    """The workflow id of a step's id (`<workflow id>.<index>`), else None."""
    if not task_id.startswith(WORKFLOW_ID_PREFIX):
        return None
    workflow_id, _, index = task_id.rpartition(".")
    return workflow_id if workflow_id and index.isdigit() else None


class Events(Feature):
    def __init__(self, keys: Keys, max_len: int) -> None:
        self.keys = keys
        self.max_len = max_len

    def wants(self, task: Any) -> bool:
        return bool(task.events)

    def on_settle(self, outcome: Outcome, task: Any) -> Effect:
        env = outcome.env
        # the executor has counted the failed attempt into env.attempt before a retry's settle
        attempt = env.attempt if outcome.status == "retry" else env.attempt + 1
        return self.effect(outcome.status, env, outcome.queue, attempt, outcome.error)

    def effect(self, status: str, env: Envelope, queue: str, attempt: int, error: str | None = None) -> Effect:
        """The "event" effect of a settle with `status` (ok, retry, dead, cancelled) of attempt `attempt`
        (also for the runner's recovery, which dead-letters a task whose lost attempt was its last)."""
        fields: list[Any] = ["event", _SETTLED[status], "id", env.id, "task", env.task, "queue", queue]
        fields += ("attempt", attempt)
        if status != "ok":
            fields += ("error", (error or "")[:MAX_ERROR])
        workflow = workflow_of(env.id)
        if workflow is not None:
            fields += ("workflow", workflow)
        return ("event", 3 + len(fields), self.keys.events, self.max_len, self.keys.stats, *fields)
