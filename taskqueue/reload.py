"""Live reload (SIGHUP, `taskqueue reload`): re-read the YAML; an invalid file is rejected with its errors and
the running configuration stays; a valid one is applied by rolling the worker processes gracefully."""

from __future__ import annotations

import dataclasses
import logging
import signal
from typing import TYPE_CHECKING

from taskqueue import config as config_mod
from taskqueue import registry
from taskqueue.broker import Broker
from taskqueue.errors import ConfigError

if TYPE_CHECKING:
    from taskqueue.supervisor import Supervisor

log = logging.getLogger("taskqueue.reload")


async def apply(supervisor: Supervisor) -> bool:
    """Validate and apply the YAML on disk; True when the new configuration runs."""
    async with supervisor.reloading:
        path = supervisor.options.config_path
        try:
            raw = config_mod.read(path)
            new = config_mod.load(path, raw=raw)
            registry.build(new)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("reload rejected: %d problem(s) in %s; the running configuration stays", len(exc.problems), path)
            return False
        old = supervisor.config
        if new.redis != old.redis:
            log.error(
                "reload rejected: the redis section changed, which needs a restart; the running configuration stays"
            )
            return False
        retiring = supervisor.active_workers()
        await supervisor.stop_services()
        supervisor.config = new
        supervisor.options = dataclasses.replace(supervisor.options, config_raw=raw)
        supervisor.broker = Broker(supervisor.broker.redis, new)
        await supervisor.broker.publish_tables()
        for _ in range(_worker_count(new, len(retiring))):
            await supervisor.spawn()  # new processes import the new code and config
        for handle in retiring:
            handle.retiring = True  # finishes what it runs, takes nothing new, exits
            handle.process.send_signal(signal.SIGTERM)
        await supervisor.start_services()
        log.info("reloaded %s: %s", path, _summary(old, new))
        return True


def _worker_count(config: config_mod.Config, current: int) -> int:
    if not config.autoscaler.enabled:
        return config.workers.initial_count
    return min(max(current, config.autoscaler.min_workers), config.autoscaler.max_workers)


def _summary(old: config_mod.Config, new: config_mod.Config) -> str:
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
