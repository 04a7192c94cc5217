"""Unique jobs (SPEC §11) on the worker's side: a task that holds a unique key (its message's `unique`,
set by the producer's `unique.lua` push) releases it when it finishes — succeeds, is dead-lettered or is
cancelled — inside the settle script (lua/hooks/unique.lua, a compare-and-delete). A retry keeps it; so does
a re-delivery after a crash, since the key travels in the message."""

from __future__ import annotations

from typing import Any

from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.keys import Keys


class Unique(Feature):
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def wants(self, task: Any) -> bool:
        return True  # a per-call unique_key may come with any task

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        lock = outcome.env.unique
        if lock is None or outcome.status == "retry":
            return None
        return ("unique_release", self.keys.unique(lock), outcome.env.id)
