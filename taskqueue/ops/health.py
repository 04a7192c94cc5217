"""The runner's health (the seed's HealthStatus): Redis (ping, version, memory, eviction policy,
persistence), this runner's worker processes (live, expected, heartbeat ages) and the delayed-task timer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Mapping
from typing import Any, Protocol

from taskqueue.config import Config
from taskqueue.ops.logs import redact
from taskqueue.store.broker import HOST, Broker
from taskqueue.worker.worker import lease_s

TIMEOUT_S = 1.0  # Redis that does not answer this soon is "unhealthy": /health must answer within seconds


class RunnerView(Protocol):
    """What the HTTP server reads of the runner (runner.Runner); read-only."""

    @property
    def config(self) -> Config: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def workers(self) -> Mapping[str, object]: ...  # this runner's worker processes, by worker id
    @property
    def last_tick(self) -> float | None: ...  # epoch seconds of the delayed-task timer's last pass


async def report(state: RunnerView) -> dict[str, Any]:
    """`{"status": healthy|degraded|unhealthy, "timestamp", "components": {redis, workers, scheduler}}`:
    the worst component decides; /health answers 503 for "unhealthy"."""
    redis = await _redis_health(state.broker)
    redis_up = redis["status"] != "unhealthy"
    if getattr(state, "mounted", False):  # an API mounted in another app (integrations.Deployment)
        workers, scheduler = await _deployment_health(state, redis_up)
    else:
        workers, scheduler = await _workers_health(state, redis_up), _scheduler_health(state)
    components = {"redis": redis, "workers": workers, "scheduler": scheduler}
    statuses = {c["status"] for c in components.values()}
    status = next(s for s in ("unhealthy", "degraded", "healthy") if s in statuses)
    return {"status": status, "timestamp": round(time.time(), 3), "components": components}


async def _redis_health(broker: Broker) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await broker.redis.ping()
            latency_ms = (time.perf_counter() - started) * 1000
            info = _single_node(await broker.redis.info())
    except Exception as exc:  # whatever stops Redis answering makes it unhealthy: reported, never raised
        reason = redact(str(exc)) or type(exc).__name__
        return {"status": "unhealthy", "message": f"Redis does not answer: {reason}"}
    policy = str(info.get("maxmemory_policy", "noeviction"))
    evicting = policy != "noeviction"
    used, limit = int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0)
    if limit and used > limit and not evicting:  # it refuses writes: enqueues fail, settling goes on
        status, message = "unhealthy", f"redis: out of memory ({used} bytes used > maxmemory {limit}): writes refused"
    elif evicting:
        status, message = "degraded", f"maxmemory-policy {policy} may silently evict queued tasks"
    else:
        status, message = "healthy", None
    return {
        "status": status,
        "message": message,
        "latency_ms": round(latency_ms, 3),
        "version": info.get("redis_version"),
        "used_memory": info.get("used_memory"),
        "maxmemory": info.get("maxmemory"),
        "maxmemory_policy": policy,
        "persistence": {
            "aof_enabled": bool(info.get("aof_enabled")),
            "rdb_last_bgsave": info.get("rdb_last_bgsave_status"),
        },
    }


def liveness() -> dict[str, Any]:
    """`/health/live`: answered by the process's event loop, so an answer is the proof (a blocked or dead loop
    gives none, and the orchestrator restarts the container). Redis is not asked: an outage is not a reason to
    restart a process that rides it out."""
    return {"status": "live", "timestamp": round(time.time(), 3)}


async def readiness(state: RunnerView) -> dict[str, Any]:
    """`/health/ready`: `ready` is Redis answering a PING within TIMEOUT_S and the runner not draining (from the
    SIGTERM on, before its workers finish: an orchestrator stops sending it work and counting it)."""
    draining = bool(getattr(state, "stopping", False))
    problem = "draining: stopping after SIGTERM" if draining else None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await state.broker.redis.ping()
        redis_up = True
    except Exception as exc:  # whatever stops Redis answering: reported, never raised
        redis_up = False
        problem = problem or f"Redis does not answer: {redact(str(exc)) or type(exc).__name__}"
    body = {"ready": redis_up and not draining, "redis": redis_up, "draining": draining, "message": problem}
    return {**body, "timestamp": round(time.time(), 3)}


def _single_node(info: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Cluster client answers INFO per node ({node: info}): take the first node's."""
    if "redis_version" not in info and info and all(isinstance(v, Mapping) for v in info.values()):
        first: Mapping[str, Any] = next(iter(info.values()))
        return first
    return info


async def _workers_health(state: RunnerView, redis_up: bool) -> dict[str, Any]:
    config = state.config
    live, expected = len(state.workers), expected_workers(state)
    body: dict[str, Any] = {"status": "healthy", "message": None, "live": live, "expected": expected}
    body.update(host=HOST, cluster_live=None, hosts=None, heartbeat_age_s=None)
    if redis_up:
        # Redis may go away between the two checks: the redis component says so.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(TIMEOUT_S):
                leases, cluster = await state.broker.worker_leases(), await state.broker.live_workers()
            ages = heartbeat_ages(leases, config)
            mine = [ages[w] for w in state.workers if w in ages]
            body["cluster_live"] = len(cluster)
            body["hosts"] = dict(collections.Counter(str(w.get("host", "?")) for w in cluster))  # live workers by host
            body["heartbeat_age_s"] = round(max(mine), 3) if mine else None
    stale = body["heartbeat_age_s"] is not None and body["heartbeat_age_s"] > 2 * config.workers.heartbeat_interval_s
    if live == 0 and expected > 0:
        body.update(status="unhealthy", message="no worker process is running")
    elif live < expected or stale:
        problem = f"{live} of {expected} worker processes running" if live < expected else "a heartbeat is late"
        body.update(status="degraded", message=problem)
    return body


async def _deployment_health(state: RunnerView, redis_up: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seen from a process that runs no worker and no timer: the deployment's live worker processes (every
    runner's), and whether due delayed tasks are promoted (by some runner's timer) in time."""
    config = state.config
    workers: dict[str, Any] = {"status": "healthy", "message": None, "live": 0, "expected": None}
    workers.update(host=HOST, cluster_live=None, hosts=None, heartbeat_age_s=None)
    scheduler: dict[str, Any] = {"status": "healthy", "enabled": None, "message": None, "overdue_s": None}
    if not redis_up:
        return workers, scheduler  # the redis component says why
    with contextlib.suppress(Exception):
        async with asyncio.timeout(TIMEOUT_S):
            leases, cluster = await state.broker.worker_leases(), await state.broker.live_workers()
            earliest_ms = await state.broker.earliest_delayed_ms()
        ages = heartbeat_ages(leases, config)
        mine = [ages[w["id"]] for w in cluster if w.get("id") in ages]
        workers.update(live=len(cluster), cluster_live=len(cluster))
        workers["hosts"] = dict(collections.Counter(str(w.get("host", "?")) for w in cluster))
        workers["heartbeat_age_s"] = round(max(mine), 3) if mine else None
        overdue = max(0.0, time.time() - earliest_ms / 1000) if earliest_ms is not None else 0.0
        scheduler["overdue_s"] = round(overdue, 3)
        if overdue > max(5.0, 3 * config.scheduler.tick_interval_s):
            message = f"a delayed task is {overdue:.1f}s overdue: is a runner with the scheduler enabled running?"
            scheduler.update(status="degraded", message=message)
    if workers["cluster_live"] == 0:
        workers.update(status="unhealthy", message="no live worker process in this deployment")
    elif (
        workers["heartbeat_age_s"] is not None and workers["heartbeat_age_s"] > 2 * config.workers.heartbeat_interval_s
    ):
        workers.update(status="degraded", message="a heartbeat is late")
    return workers, scheduler


def expected_workers(state: RunnerView) -> int:
    """The autoscaler's latest target when it has decided, else workers.initial_count."""
    decision = getattr(state, "last_decision", None)
    target = getattr(decision, "target", None)
    return target if isinstance(target, int) else state.config.workers.initial_count


def heartbeat_ages(leases: Mapping[str, int], config: Config, now: float | None = None) -> dict[str, float]:
    """Worker id → seconds since its last heartbeat (a heartbeat sets the lease to now + lease)."""
    now_ms = time.time() * 1000 if now is None else now * 1000
    lease_ms = lease_s(config) * 1000
    return {w: max(0.0, (now_ms - (deadline - lease_ms)) / 1000) for w, deadline in leases.items()}


def _scheduler_health(state: RunnerView) -> dict[str, Any]:
    sched = state.config.scheduler
    if not sched.enabled:
        return {"status": "healthy", "enabled": False, "message": "disabled in the config", "last_tick_age_s": None}
    if state.last_tick is None:
        return {"status": "degraded", "enabled": True, "message": "no tick yet", "last_tick_age_s": None}
    age = max(0.0, time.time() - state.last_tick)
    late = age > max(5.0, 3 * sched.tick_interval_s)
    return {
        "status": "degraded" if late else "healthy",
        "enabled": True,
        "message": f"last tick {age:.1f}s ago (tick_interval {sched.tick_interval_s:g}s)" if late else None,
        "last_tick_age_s": round(age, 3),
    }
