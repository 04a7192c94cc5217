"""Rate and concurrency limits (SPEC §11) on the worker's side. A limited task is admitted where it is taken:
before it starts, the worker runs `admit.lua`, which counts the start in each rate's window and makes it a
holder of its concurrency limit, or moves it from the worker's in-flight hash to its limit's waiting list —
no slot kept, no attempt counted, nothing polled: a holder's release (lua/hooks/limits.lua, in its settle
script) lets the oldest waiting tasks go as far as every limit allows, and the delayed-task timer lets
waiting tasks go as rate windows free up (promote.lua); oldest first (lua/lib/limits.lua says how FIFO is
kept). A start is counted until the latest time its body may begin plus the window: the worker does not begin
a body later than it said (worker/execute.py), so no window as the bodies see it holds more than N starts.
With `key`, every value of that kwarg has its own budget and its own waiting list, so a busy tenant waits on
its own and the others go on.

A task no limit applies to never reaches this module (`wants` is asked once per task name)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.keys import Keys

LATE_S = 0.02  # how late after its admission a body may begin, at first and at least
LATEST_S = 1.0  # ... and at most, however late this worker's bodies began
NO_KEY = "-"  # the bucket of a limit without `key`, or of a call that does not pass the kwarg
MAX_SHOWN_KEY = 64  # longer (or non-text) key values are named by a digest


@dataclass(frozen=True, slots=True)
class Gate:
    """What admit.lua needs for one start: the limit's keys, its spec (JSON) and the stats field of a wait."""

    spec: str
    waiting: str
    holders: str | None
    waits_field: str
    rated: bool = False  # a rate limit applies: the body must begin on time (Lateness)


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


class BeganLate(Exception):
    """A rate-limited task's body would have begun later than its admission allowed: it did not begin."""

    def __init__(self, late_s: float) -> None:
        super().__init__(f"began {late_s * 1000:.1f} ms late")
        self.late_s = late_s


@dataclass(slots=True)
class Start:
    """A rate-limited run's admission as the worker sees it (time.monotonic()): when it was asked for, admit.lua's
    time for it (Redis' clock, ms), the latest its body may begin, and when it began."""

    sent: float
    at_ms: int
    by: float
    began: float = 0.0


def on_time(start: Start, call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` if it is not later than `start.by`, else BeganLate: called where the body begins (its
    thread), so nothing but this check comes between the two."""
    now = time.monotonic()
    if now > start.by:
        raise BeganLate(now - start.by)
    start.began = now
    return call(*args)


class Lateness:
    """How late after its admission this worker says a rate-limited body may begin (admit.lua counts the start
    from then). The worker keeps its word (on_time): a body that would begin later is admitted again, and the
    allowance grows; it shrinks back slowly while bodies begin in time. Until the task settles (Limits.begun),
    its start counts from admission plus this allowance."""

    def __init__(self) -> None:
        self.allowed_s = LATE_S

    def missed(self, late_s: float) -> None:
        self.allowed_s = min(LATEST_S, max(self.allowed_s * 2, (self.allowed_s + late_s) * 1.5))

    def kept(self) -> None:
        self.allowed_s = max(LATE_S, self.allowed_s * 0.98)


class Limits(Feature):
    def __init__(self, keys: Keys, worker_id: str) -> None:
        self.keys = keys
        self.worker_id = worker_id
        self._gates: dict[tuple[str, str, str], Gate] = {}
        self.lateness = Lateness()
        self._turns: dict[str, asyncio.Future[None]] = {}
        self._begun: dict[str, tuple[str, int]] = {}  # task id -> its rate windows' member, when its body began

    @contextlib.asynccontextmanager
    async def turn(self, waiting: str) -> AsyncIterator[None]:
        """One admission at a time per waiting list, in the order asked: the tasks this worker took reach
        admit.lua (and the waiting list) in the order they were taken, not in the order their calls happen to
        arrive."""
        before = self._turns.get(waiting)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns[waiting] = mine
        try:
            if before is not None:
                await before
            yield
        finally:
            mine.set_result(None)
            if self._turns.get(waiting) is mine:
                del self._turns[waiting]

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
            # a start counts from the latest time its body may begin (the worker says when, admit.lua) for the window
            spec["r"].append([keys.limit(task.name, f"rate{index}", rate_value), rate.count, int(rate.window_s * 1000)])
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
        spec["x"] = keys.limit(task.name, "released", f"{rate_value}.{held_value}")
        field = f"rate_limited:{queue}:{task.name}"
        gate = Gate(json.dumps(spec, separators=(",", ":")), waiting, holders, field, bool(limits.rates))
        if len(self._gates) < 10_000:
            self._gates[(task.name, rate_value, held_value)] = gate
        return gate

    def admission(self, env: Any, task: Any, queue: str) -> Gate:
        return self.gate(task, env.kwargs, queue)

    def holder(self, task_id: str) -> str:
        """This worker's member in a concurrency limit's holders (recognised as stale once its lease is gone)."""
        return f"{self.worker_id}|{task_id}"

    def begun(self, task_id: str, start: Start) -> None:
        """A rate-limited body began: its settle moves its start in the rate windows back from the latest time it
        might have begun to the latest it did (measured here: from the admission's call to the body), so the
        allowance costs the rate only until then."""
        self.lateness.kept()
        if not start.began:
            return  # it never reached its body (a cancel, a timeout): its start stays counted as it was
        began_ms = start.at_ms + math.ceil((start.began - start.sent) * 1000) + 1  # +1: TIME is cut to the ms
        self._begun[task_id] = (f"{self.holder(task_id)}:{start.at_ms}", began_ms)

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        """Any settle (success, retry, dead letter) ends a concurrency hold, and says when a rated body began."""
        begun = self._begun.pop(outcome.env.id, None)
        if not task.limits.concurrency and begun is None:
            return None
        gate = self.gate(task, outcome.env.kwargs, outcome.queue)
        keys = self.keys
        holder = self.holder(outcome.env.id) if task.limits.concurrency else ""
        member, began_ms = begun if begun is not None else ("", 0)
        timer = (keys.limits_waiting, keys.delayed_wake)  # when to look at the waiting list again
        waiting = (gate.waiting, keys.queue_prefix, gate.spec, keys.workers, *timer)
        return ("limits_settle", holder, *waiting, member, began_ms)
