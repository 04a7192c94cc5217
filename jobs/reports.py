"""Example tasks in the seed's style: a class with an execute() method, instantiated with the kwargs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class BuildReport:
    """The seed's `Task` trait in Python: fields come from the message's kwargs."""

    kind: str = "daily"

    def execute(self) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return {"report": self.kind, "built_at": now}


def ping(target: str = "db") -> str:
    """A tiny periodic health task."""
    return f"pong from {target}"
