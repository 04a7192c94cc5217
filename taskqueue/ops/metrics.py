"""Prometheus metrics (prometheus-client): a snapshot of Redis read at scrape time, rendered by a collector.

The task counters are not kept in this process: every worker process adds its counts to the `{p}:stats`
hash (see stats.py) inside the Lua script that acks its tasks, so a scrape of any runner reports the
totals of every worker process of every runner, and they survive restarts. Only the HTTP request
counter and the process_* metrics belong to the runner that is scraped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from taskqueue import envelope
from taskqueue.config import Config
from taskqueue.ops import load
from taskqueue.store.broker import Broker
from taskqueue.store.eventlog import EVENT_NAMES
from taskqueue.store.stats import DURATION_BUCKETS, ORPHANS_FIELD, RETIREMENT_REASONS, RETIREMENTS_PREFIX

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SNAPSHOT_TIMEOUT_S = 2.5  # a scrape answers (taskqueue_redis_up 0) well inside Prometheus' default 10s

# `{p}:stats` counter → (metric name without _total, help).
TASK_COUNTERS = {
    "enqueued": (
        "taskqueue_runner_enqueued",
        "Tasks the runner itself enqueued: CLI, HTTP API and schedule fires. Not a client's enqueue (one LPUSH, "
        "uncounted to keep it one command) nor redis-cli's; taskqueue_tasks_processed_total counts every task run.",
    ),
    "processed": ("taskqueue_tasks_processed", "Tasks that succeeded."),
    "failed": ("taskqueue_tasks_failed", "Failed attempts (each retried attempt and each dead-lettering counts)."),
    "retried": ("taskqueue_tasks_retried", "Failed attempts scheduled to run again."),
    "dead": ("taskqueue_tasks_dead", "Tasks moved to the dead-letter store."),
    "rate_limited": (
        "taskqueue_tasks_rate_limited",
        "Starts held back by a rate or concurrency limit, or by the task raising RateLimited (no attempt counted).",
    ),
    "duplicate": ("taskqueue_duplicates", "Enqueues refused as duplicates of a unique task already there."),
    "cancelled": ("taskqueue_tasks_cancelled", "Tasks cancelled before or while they ran."),
}
SCHEDULE_COUNTERS = {
    "schedule_fired": ("taskqueue_schedule_fired", "Fires of a periodic schedule, across all runners."),
    "schedule_skipped": ("taskqueue_schedule_skipped", "Fires of a periodic schedule that were skipped."),
}
AUTOSCALER_PREFIX = "autoscaler_"  # autoscaler_up, autoscaler_down: scaling decisions of all runners


@dataclass(frozen=True)
class Snapshot:
    """What one scrape reports; `redis_up` False leaves everything else empty."""

    redis_up: bool
    depths: Mapping[str, int] = field(default_factory=dict)
    oldest_age_s: Mapping[str, float] = field(default_factory=dict)  # only queues whose age is known
    delayed: int = 0
    dead: int = 0
    stats: Mapping[str, int] = field(default_factory=dict)
    workers: Sequence[Mapping[str, str]] = ()
    load: Mapping[str, Any] = field(default_factory=dict)  # load.figures(): what an external autoscaler reads


async def read_snapshot(broker: Broker) -> Snapshot:
    """Everything /metrics reports, read from Redis; a Redis that fails to answer in time gives redis_up 0."""
    try:
        return await asyncio.wait_for(_read(broker), SNAPSHOT_TIMEOUT_S)
    except Exception:  # any failure to read is "Redis down" for the scrape, never a 500
        return Snapshot(redis_up=False)


async def _read(broker: Broker) -> Snapshot:
    (depths, oldest, delayed, dead, stats, workers), backlog = await asyncio.gather(
        asyncio.gather(
            broker.queue_depths(),
            broker.oldest_ready(),
            broker.delayed_count(),
            broker.dead_count(),
            broker.stats(),
            broker.live_workers(),
        ),
        broker.backlog(),
    )
    ages = oldest_ages(oldest, broker.config.max_payload_bytes)
    return Snapshot(True, depths, ages, delayed, dead, stats, workers, load.figures(backlog))


def oldest_ages(oldest: Mapping[str, bytes | None], max_bytes: int, now: float | None = None) -> dict[str, float]:
    """Queue → age (s) of its oldest ready task: 0 when empty, absent when the message has no `enqueued_at`."""
    now = time.time() if now is None else now
    ages: dict[str, float] = {}
    for queue, raw in oldest.items():
        if raw is None:
            ages[queue] = 0.0
            continue
        try:
            enqueued_at = envelope.decode(raw, max_bytes).enqueued_at
        except envelope.InvalidEnvelope:
            continue
        if enqueued_at is not None and math.isfinite(enqueued_at):
            ages[queue] = max(0.0, now - enqueued_at)
    return ages


class _SnapshotCollector(Collector):
    """Turns the snapshot set just before `generate_latest` into metric families (collect() is sync)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.snapshot = Snapshot(redis_up=False)
        self.http_requests: Counter[tuple[str, str, str]] = Counter()  # (method, route, status) → count

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        requests = CounterMetricFamily(
            "taskqueue_http_requests", "HTTP requests served by this runner.", labels=["method", "route", "status"]
        )
        for labels, count in sorted(self.http_requests.items()):
            requests.add_metric(labels, count)
        yield requests
        yield GaugeMetricFamily("taskqueue_redis_up", "1 when Redis answered this scrape, else 0.", int(snap.redis_up))
        if not snap.redis_up:
            return
        yield from _queue_families(snap)
        yield from _counter_families(snap.stats, self.config)
        yield from _event_families(snap.stats, self.config)
        yield _duration_family(snap.stats, self.config)
        yield GaugeMetricFamily("taskqueue_workers", "Live worker processes of all runners.", len(snap.workers))
        yield GaugeMetricFamily(
            "taskqueue_worker_slots",
            "Task slots (max_concurrent_tasks) of all live worker processes.",
            sum(_int(w.get("slots")) for w in snap.workers),
        )
        yield GaugeMetricFamily(
            "taskqueue_active_tasks",
            "Tasks running now on all live worker processes (as of their last heartbeat).",
            sum(_int(w.get("active")) for w in snap.workers),
        )
        yield from _load_families(snap.load)


def _load_families(figures: Mapping[str, Any]) -> Iterable[Metric]:
    """ops/load.py's figure, for an HPA or KEDA (deploy/kubernetes/)."""
    per_queue = GaugeMetricFamily(
        "taskqueue_load",
        "(ready + due delayed + running tasks of the queue) / task slots of all live worker processes "
        "(no live worker: / 1). Scale the workers' pods on it with an external autoscaler.",
        labels=["queue"],
    )
    for queue, found in figures.get("queues", {}).items():
        per_queue.add_metric([queue], found["load"])
    yield per_queue
    yield GaugeMetricFamily(
        "taskqueue_deployment_load",
        "taskqueue_load of all queues together: (ready + due delayed + running) / task slots.",
        figures.get("load", 0.0),
    )


def _queue_families(snap: Snapshot) -> Iterable[Metric]:
    pending = GaugeMetricFamily("taskqueue_queue_pending", "Ready tasks waiting in a queue.", labels=["queue"])
    for queue, depth in snap.depths.items():
        pending.add_metric([queue], depth)
    yield pending
    age = GaugeMetricFamily(
        "taskqueue_queue_oldest_task_age_seconds",
        "Time since the oldest ready task of a queue was first enqueued (0 when the queue is empty).",
        labels=["queue"],
    )
    for queue, seconds in snap.oldest_age_s.items():
        age.add_metric([queue], seconds)
    yield age
    yield GaugeMetricFamily("taskqueue_queue_delayed", "Tasks waiting for their time (delays, retries).", snap.delayed)
    yield GaugeMetricFamily("taskqueue_dead_tasks", "Tasks in the dead-letter store.", snap.dead)


def _declared_pairs(config: Config) -> list[tuple[str, str]]:
    """(queue, task) of every declared task, reported as 0 before its first count so rate() starts cleanly."""
    return [(t.queue, name) for name, t in config.tasks.items()]


def _counter_families(stats: Mapping[str, int], config: Config) -> Iterable[Metric]:
    counts: dict[str, dict[tuple[str, ...], int]] = {c: {} for c in (*TASK_COUNTERS, *SCHEDULE_COUNTERS)}
    for pair in _declared_pairs(config):
        for name in TASK_COUNTERS:
            counts[name][pair] = 0
    for fieldname, value in stats.items():
        counter, *parts = fieldname.split(":")
        if (counter in TASK_COUNTERS and len(parts) == 2) or (counter in SCHEDULE_COUNTERS and len(parts) == 1):
            counts[counter][tuple(parts)] = value
    for counter, (name, doc) in (*TASK_COUNTERS.items(), *SCHEDULE_COUNTERS.items()):
        family = CounterMetricFamily(name, doc, labels=["queue", "task"] if counter in TASK_COUNTERS else ["schedule"])
        for labels, value in sorted(counts[counter].items()):
            family.add_metric(labels, value)
        yield family
    decisions = CounterMetricFamily(
        "taskqueue_autoscaler_decisions", "Scaling decisions of all runners' autoscalers.", labels=["direction"]
    )
    for fieldname, value in sorted(stats.items()):
        if fieldname.startswith(AUTOSCALER_PREFIX) and ":" not in fieldname:
            decisions.add_metric([fieldname.removeprefix(AUTOSCALER_PREFIX)], value)
    yield decisions
    workflows = CounterMetricFamily(
        "taskqueue_workflows",
        "Workflows started, succeeded, failed (a step dead-lettered), resumed (dead retry) and cancelled, all runners.",
        labels=["state"],
    )
    for state in ("started", "succeeded", "failed", "resumed", "cancelled"):
        workflows.add_metric([state], stats.get(f"workflows:{state}", 0))
    yield workflows
    orphans = CounterMetricFamily(
        "taskqueue_orphaned_tasks_recovered",
        "Tasks found in flight for a worker that was no longer registered, and recovered (should stay 0).",
    )
    orphans.add_metric([], stats.get(ORPHANS_FIELD, 0))
    yield orphans
    retirements = CounterMetricFamily(
        "taskqueue_worker_retirements",
        "Worker processes that retired by themselves and were replaced, all runners: max_tasks "
        "(workers.max_tasks_per_child reached) or max_memory (RSS above workers.max_memory_per_child).",
        labels=["reason"],
    )
    for reason in RETIREMENT_REASONS:
        retirements.add_metric([reason], stats.get(RETIREMENTS_PREFIX + reason, 0))
    yield retirements


def _event_families(stats: Mapping[str, int], config: Config) -> Iterable[Metric]:
    """Lifecycle events written, and webhook deliveries (SPEC §13)."""
    events = CounterMetricFamily(
        "taskqueue_events",
        "Lifecycle events written to the events stream (events: in the YAML), by event, all processes; counted "
        "inside the script that writes each one.",
        labels=["event"],
    )
    for name in EVENT_NAMES:
        events.add_metric([name], stats.get(f"events:{name}", 0))
    yield events
    deliveries = CounterMetricFamily(
        "taskqueue_webhook_deliveries",
        "Webhook deliveries, all runners: delivered (a 2xx answer), failed (an attempt that got an error, a "
        "non-2xx answer or no answer in time), undeliverable (given up after max_attempts, kept for "
        "`webhooks retry`) and lost (trimmed from the events stream before the webhook read them: "
        "events.max_backlog reached).",
        labels=["webhook", "outcome"],
    )
    for hook in config.webhooks:
        for outcome in ("delivered", "failed", "undeliverable", "lost"):
            deliveries.add_metric([hook.name, outcome], stats.get(f"webhook_{outcome}:{hook.name}", 0))
    yield deliveries


def _duration_family(stats: Mapping[str, int], config: Config) -> Metric:
    """The workers count each attempt in one bucket (non-cumulative); Prometheus wants cumulative `le` counts."""
    empty = [0] * len(DURATION_BUCKETS)
    per_bucket = {pair: list(empty) for pair in _declared_pairs(config)}  # declared tasks start at zero
    sums_us: dict[tuple[str, str], int] = defaultdict(int)
    for fieldname, value in stats.items():
        kind, *rest = fieldname.split(":")
        if kind == "duration" and len(rest) == 3:
            index = _bucket_index(rest[2])
            if index is not None:
                per_bucket.setdefault((rest[0], rest[1]), list(empty))[index] += value
        elif kind == "duration_us" and len(rest) == 2:
            sums_us[(rest[0], rest[1])] += value
    family = HistogramMetricFamily(
        "taskqueue_task_duration_seconds",
        "Run time of task attempts (successes and failures).",
        labels=["queue", "task"],
    )
    for pair, counts in sorted(per_bucket.items()):
        running, buckets = 0, []
        for upper, count in zip(DURATION_BUCKETS, counts, strict=True):
            running += count
            buckets.append(("+Inf" if math.isinf(upper) else repr(upper), float(running)))
        family.add_metric(list(pair), buckets, sums_us[pair] / 1e6)
    return family


def _bucket_index(name: str) -> int | None:
    try:
        upper = float(name)  # "0.005", "1.0", "+Inf"
    except ValueError:
        return None
    return DURATION_BUCKETS.index(upper) if upper in DURATION_BUCKETS else None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class Metrics:
    """The runner's private registry: the Redis snapshot, this process's HTTP requests and process_* metrics."""

    def __init__(self, config: Config) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._snapshot = _SnapshotCollector(config)
        self.registry.register(self._snapshot)
        ProcessCollector(registry=self.registry)

    def count_request(self, method: str, route: str, status: int) -> None:
        self._snapshot.http_requests[(method, route, str(status))] += 1

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition text for `snapshot` (no await in between: concurrent scrapes cannot mix)."""
        self._snapshot.snapshot = snapshot
        return generate_latest(self.registry)
