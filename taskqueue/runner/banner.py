"""The runner's one start line (SPEC §17): version, config file, Redis (where, without its password; server
version; persistence), shards, queues, workers, HTTP address. A Redis without persistence makes it a warning:
a restart of that Redis loses every queued task."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import taskqueue
from taskqueue.config import Config
from taskqueue.store import redisboot
from taskqueue.store.redisboot import UNREACHABLE

log = logging.getLogger("taskqueue.runner")

SHARDS = 1  # one deployment is one key prefix on one Redis (or one Cluster slot): SPEC §14 may add more


async def persistence(client: Any) -> tuple[bool | None, str]:
    """(on?, how): AOF, RDB snapshots (`save` rules), both, or off; None when Redis does not say (a managed
    Redis that refuses CONFIG and reports no AOF)."""
    info = _one_node(await client.info("persistence"))
    aof = str(info.get("aof_enabled", "0")) == "1"
    try:
        rules = str(_one_node(await client.config_get("save")).get("save", "")).strip()
    except UNREACHABLE:  # CONFIG renamed or refused: only the AOF flag is known
        return (True, "AOF") if aof else (None, "unknown (CONFIG GET save refused; AOF off)")
    kinds = [k for k, on in (("AOF", aof), (f"RDB save '{rules}'", bool(rules))) if on]
    return (True, " + ".join(kinds)) if kinds else (False, "OFF")


def _one_node(found: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Cluster client answers per node ({node: answer}): the first node's (ours share a slot)."""
    if found and all(isinstance(v, Mapping) for v in found.values()):
        first: Mapping[str, Any] = next(iter(found.values()))
        return first
    return found


def line(config: Config, config_path: str, version: str, persisted: str, serve: bool, http: Sequence[str]) -> str:
    w = config.workers
    queues = ", ".join(f"{q.name} (priority {q.priority})" for q in config.queues)
    web = (", ".join(http) or "off") if serve else "none (`worker`)"
    return (
        f"taskqueue {taskqueue.__version__} | config {config_path} | {redisboot.where(config)} "
        f"(Redis {version}, persistence {persisted}) | shards {SHARDS} | queues {queues} | "
        f"workers {w.initial_count} x {w.max_concurrent_tasks} slots"
        f"{', autoscaler on' if config.autoscaler.enabled else ''} | HTTP {web}"
    )


async def log_banner(client: Any, config: Config, config_path: str, serve: bool, http: Sequence[str]) -> None:
    """Log the autoscaler warning if due, then the start line: INFO, or WARNING when Redis persists nothing."""
    try:
        version = str(_one_node(await client.info("server")).get("redis_version", "?"))
        on, persisted = await persistence(client)
    except UNREACHABLE as exc:  # gone since the start checks: the outage is reported by the loops
        version, on, persisted = "?", None, f"unknown ({redisboot.reason(exc)})"
    text = line(config, config_path, version, persisted, serve, http)
    if config.autoscaler.enabled and os.environ.get("KUBERNETES_SERVICE_HOST"):  # before the banner: once a reader
        log.warning(  # has seen the banner, this is there already if it is due
            "the built-in autoscaler is on in a Kubernetes pod: if an HPA or KEDA scales these pods on "
            "taskqueue_load, set `autoscaler: {enabled: false}` (the two would fight; README: Kubernetes)"
        )
    if on is False:
        log.warning("%s: a restart of this Redis loses every queued task (README: Operations, Redis persistence)", text)
    else:
        log.info("%s", text)
