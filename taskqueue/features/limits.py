"""Rate and concurrency limits (SPEC §11) on the worker's side. A limited task is admitted where it is taken:
before it starts, the worker runs `admit.lua`, which counts the start in each rate's window and makes it a
holder of its concurrency limit, or moves it from the worker's in-flight hash to its limit's waiting list —
no slot kept, no attempt counted, nothing polled: a holder's release (lua/hooks/limits.lua, in its settle
script) lets the oldest waiting task go, and the delayed-task timer lets waiting tasks go as rate windows
free up (promote.lua). With `key`, every value of that kwarg has its own budget and its own waiting list,
so a busy tenant waits on its own and the others go on.

A task no limit applies to never reaches this module (`wants` is asked once per task name)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.keys import Keys

NO_KEY = "-"  # the bucket of a limit without `key`, or of a call that does not pass the kwarg
MAX_SHOWN_KEY = 64  # longer (or non-text) key values are named by a digest


@dataclass(frozen=True, slots=True)
class Gate:
    """What admit.lua needs for one start: the limit's keys, its spec (JSON) and the stats field of a wait."""

    spec: str
    waiting: str
    holders: str | None
    waits_field: str


def key_value(kwargs: Mapping[str, Any], name: str | None) -> str:
    """The bucket of a call: the value of the key kwarg, as text (a digest when long or not a str/int)."""
    if name is None or name not in kwargs:
        return NO_KEY
    value = kwargs[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        value = hashlib.blake2b(msgpack.packb(value, use_bin_type=True), digest_size=12).hexdigest()
    text = str(value)
    if len(text) > MAX_SHOWN_KEY or not text or any(c in text for c in ":|* \n"):
        text = "h" + hashlib.blake2b(text.encode("utf-8", "backslashreplace"), digest_size=12).hexdigest()
    return text


class Limits(Feature):
    def __init__(self, keys: Keys, worker_id: str) -> None:
        self.keys = keys
        self.worker_id = worker_id
        self._gates: dict[tuple[str, str, str], Gate] = {}

    def wants(self, task: Any) -> bool:
        return task.limits is not None

    def gate(self, task: Any, kwargs: Mapping[str, Any], queue: str) -> Gate:
        limits = task.limits
        rate_value = key_value(kwargs, limits.rate_key)
        held_value = key_value(kwargs, limits.concurrency_key)
        found = self._gates.get((task.name, rate_value, held_value))
        if found is not None:
            return found
        keys = self.keys
        why = []
        spec: dict[str, Any] = {"r": []}
        for index, rate in enumerate(limits.rates):
            # a start counts for its window and 10 ms more: the limit then also holds as the task bodies see
            # it, a few ms after their admission
            window_ms = int(rate.window_s * 1000) + 10
            spec["r"].append([keys.limit(task.name, f"rate{index}", rate_value), rate.count, window_ms])
        if limits.rates:
            shown = ", ".join(r.text for r in limits.rates)
            why.append(f"rate_limit {shown}" + (f" {limits.rate_key}={rate_value}" if limits.rate_key else ""))
        holders = None
        if limits.concurrency:
            holders = keys.limit(task.name, "running", held_value)
            spec["h"], spec["c"] = holders, limits.concurrency
            key = f" {limits.concurrency_key}={held_value}" if limits.concurrency_key else ""
            why.append(f"concurrency {limits.concurrency}{key}")
        spec["why"] = "; ".join(why)
        waiting = keys.limit(task.name, "waiting", f"{rate_value}.{held_value}")
        gate = Gate(json.dumps(spec, separators=(",", ":")), waiting, holders, f"rate_limited:{queue}:{task.name}")
        if len(self._gates) < 10_000:
            self._gates[(task.name, rate_value, held_value)] = gate
        return gate

    def admission(self, env: Any, task: Any, queue: str) -> Gate:
        return self.gate(task, env.kwargs, queue)

    def holder(self, task_id: str) -> str:
        """This worker's member in a concurrency limit's holders (recognised as stale once its lease is gone)."""
        return f"{self.worker_id}|{task_id}"

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        """Any settle (success, retry, dead letter) ends a concurrency hold; rate windows need nothing."""
        if not task.limits.concurrency:
            return None
        gate = self.gate(task, outcome.env.kwargs, outcome.queue)
        return ("limit_release", gate.holders, self.holder(outcome.env.id), gate.waiting, self.keys.queue_prefix)
