"""Results: a finished task's value (or why it was dead-lettered) under `{p}:result:<id>` for its
`result_ttl`, written by the settle script itself (lua/hooks/result.lua), atomically with the ack."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from taskqueue.envelope import printable
from taskqueue.features import Effect, Feature, Outcome
from taskqueue.store.keys import Keys


class Results(Feature):
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def wants(self, task: Any) -> bool:
        return bool(task.result_ttl_s > 0)

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        if outcome.status == "retry":
            return None  # an attempt that will run again has no result yet
        value = result_bytes(outcome.status, outcome.value, outcome.error, outcome.env.task)
        return ("result", self.keys.result(outcome.env.id), int(task.result_ttl_s * 1000), value)


def result_bytes(status: str, value: Any, error: str | None, task: str | None = None) -> bytes:
    """The stored result; `task` names the task, for status() (and the Django backend's get_result)."""
    body = {"status": status, "value": value, "error": error, "finished_at": time.time(), "task": task}
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        if status == "ok":
            body.update(value=None, error=f"result not serialisable: {type(exc).__name__}: {exc}")
        body["error"] = printable(body["error"])  # a failure's text may quote a broken string
        packed = msgpack.packb(body, use_bin_type=True)
    return packed
