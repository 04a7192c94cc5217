"""Live reload (SIGHUP, `taskqueue reload`): re-read the YAML; an invalid file is rejected with its errors and
the running configuration stays; a valid one is applied by the runner (Runner.reload), which rolls the
worker processes gracefully. This module only decides; it knows nothing of the runner. The verdict goes to
the log, and to the `taskqueue reload` that asked for it (runner/presence.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from taskqueue import config as config_mod
from taskqueue.config import registry
from taskqueue.errors import ConfigError
from taskqueue.runner import checking

log = logging.getLogger("taskqueue.reload")


@dataclass(frozen=True)
class Verdict:
    """What one reload came to: applied or not, one line saying so (what changed, or why the file was
    rejected), and the file's problems, each `file:line:col: path: message`."""

    applied: bool
    reason: str
    problems: tuple[str, ...] = ()


class Rejected(Exception):
    """The file on disk cannot replace the running configuration (already logged)."""

    def __init__(self, reason: str, problems: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.verdict = Verdict(False, reason, tuple(problems))


async def read_new(
    path: Path, running: config_mod.Config
) -> tuple[config_mod.Config, bytes, bytes | None, registry.Registry]:
    """The YAML on disk, validated and importable, as (config, raw bytes, its checked form for the workers
    (config.load_checked), its tasks' signatures); raises Rejected (the reasons logged) when the running
    configuration must stay. Checked apart (runner/checking.py): the new code is imported fresh there."""
    try:
        raw = config_mod.read(path)
        new, checked, tasks = await checking.check_async(path, raw)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        reason = f"reload rejected: {len(exc.problems)} problem(s) in {path}; the running configuration stays"
        log.error("%s", reason)
        raise Rejected(reason, exc.problems) from None
    if new.redis != running.redis:
        reason = f"reload rejected: the redis section of {path} changed, which needs a restart"
        reason += "; the running configuration stays"
        log.error("%s", reason)
        raise Rejected(reason)
    return new, raw, checked, tasks


def worker_count(config: config_mod.Config, current: int) -> int:
    """How many worker processes the new configuration starts with."""
    if not config.autoscaler.enabled:
        return config.workers.initial_count
    return min(max(current, config.autoscaler.min_workers), config.autoscaler.max_workers)


def summary(old: config_mod.Config, new: config_mod.Config) -> str:
    parts = []
    for label, before, after in (
        ("tasks", set(old.tasks), set(new.tasks)),
        ("queues", {q.name for q in old.queues}, {q.name for q in new.queues}),
        ("schedules", {s.name for s in old.schedules}, {s.name for s in new.schedules}),
    ):
        if after - before:
            parts.append(f"{label} added: {', '.join(sorted(after - before))}")
        if before - after:
            parts.append(f"{label} removed: {', '.join(sorted(before - after))}")
    return "; ".join(parts) or "worker processes rolled"
