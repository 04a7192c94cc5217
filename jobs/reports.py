"""Example tasks: a class with an execute() method, instantiated with the kwargs; and a plain function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class BuildReport:
    """A task written as a class: each run makes one from the message's kwargs (its fields), then calls
    execute(); what execute() returns is the task's result."""

    kind: str = "daily"

    def execute(self) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return {"report": self.kind, "built_at": now}


def ping(target: str = "db") -> str:
    """A tiny periodic health task."""
    return f"pong from {target}"
