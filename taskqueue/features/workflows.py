"""Workflows (SPEC §10) on the worker's side: when a step settles, its workflow advances inside the same
settle script (lua/hooks/workflow.lua): the step's result is stored, the steps that waited for it are
pushed when nothing else holds them, the workflow's own result is written when its last step succeeds;
a dead-lettered step fails the workflow, and the same step succeeding later (`dead retry`) resumes it.

A step is recognised by its id, `<workflow id>.<index>` (the producer gives every step one); any task may
be a step, so the feature is wanted by every task but called only for ids with the workflow prefix."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.keys import Keys
from taskqueue.store.producer import WORKFLOW_ID_PREFIX


def step_of(task_id: str) -> tuple[str, int] | None:
    """(workflow id, step index) of a step's id, or None for a task that is not a step."""
    if not task_id.startswith(WORKFLOW_ID_PREFIX):
        return None
    workflow_id, _, index = task_id.rpartition(".")
    return (workflow_id, int(index)) if workflow_id and index.isdigit() else None


class Workflows(Feature):
    id_prefix = WORKFLOW_ID_PREFIX

    def __init__(self, keys: Keys, events_max_len: int = 100000) -> None:
        self.keys = keys
        self.events_max_len = events_max_len

    def wants(self, task: Any) -> bool:
        return True

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        found = step_of(outcome.env.id)
        if found is None or outcome.status == "retry":
            return None
        workflow_id, index = found
        key, result_key = self.keys.workflow(workflow_id), self.keys.result(workflow_id)
        # the step's task has events on: the workflow_finished event that its settle may cause is written too
        env = outcome.env
        events = (self.keys.events, self.events_max_len) if getattr(task, "events", False) else ("", 0)
        about = (*events, env.task, outcome.queue, env.attempt + 1)
        if outcome.status == "ok":
            try:
                value = msgpack.packb(outcome.value, use_bin_type=True)
            except (TypeError, ValueError, OverflowError):
                value = msgpack.packb(None)  # the step's own result record says why
            stats = self.keys.stats
            return ("wf_done", key, index, value, self.keys.queue_prefix, result_key, time.time(), stats, *about)
        error = outcome.error or "dead-lettered"
        return ("wf_failed", key, index, error, result_key, time.time(), self.keys.stats, *about)
