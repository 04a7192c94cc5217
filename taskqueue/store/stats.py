"""Fields of the `{p}:stats` hash: counters every worker process bumps (in batches, inside its exchange
script) and every runner reads, so the numbers are right however many processes and hosts there are.

    processed:<queue>:<task>          tasks that succeeded
    failed:<queue>:<task>             failed attempts (each retry and each dead-lettering counts)
    retried:<queue>:<task>            attempts scheduled again
    dead:<queue>:<task>               tasks dead-lettered
    enqueued:<queue>:<task>           tasks the runner enqueued: CLI, HTTP, schedule fires (not clients)
    duration:<queue>:<task>:<le>      attempts that took at most `le` seconds (and more than the bucket below)
    duration_us:<queue>:<task>        total run time of those attempts, in microseconds
    autoscaler_up / autoscaler_down   scaling decisions of all runners
    schedule_fired:<schedule>         fires of a periodic schedule (across all runners)
    schedule_skipped:<schedule>       fires skipped: too late (misfire_grace) or missed while down (catch_up: false)
    orphaned_recovered                tasks recovered from the in-flight hash of an unregistered worker
    retirements:<reason>              worker processes recycled: max_tasks, max_memory (counted by retire.lua)
"""

from __future__ import annotations

import bisect
import functools

# Prometheus' default buckets, seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"))
ORPHANS_FIELD = "orphaned_recovered"
RETIREMENTS_PREFIX = "retirements:"
RETIREMENT_REASONS = ("max_tasks", "max_memory")
_BUCKET_NAMES = tuple("+Inf" if b == float("inf") else repr(b) for b in DURATION_BUCKETS)


def field(counter: str, queue: str, task: str) -> str:
    """`processed:default:send_email`; queue and task names never contain ':'."""
    return f"{counter}:{queue}:{task}"


@functools.cache
def duration_names(queue: str, task: str) -> tuple[tuple[str, ...], str]:
    """(bucket fields in DURATION_BUCKETS order, the microseconds-sum field) of one (queue, task)."""
    buckets = tuple(f"duration:{queue}:{task}:{name}" for name in _BUCKET_NAMES)
    return buckets, f"duration_us:{queue}:{task}"


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket an attempt of `seconds` falls in (the first `le` >= seconds)."""
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


def duration_fields(queue: str, task: str, seconds: float) -> tuple[str, str, int]:
    """(bucket field, sum field, microseconds) for one observed attempt."""
    buckets, total = duration_names(queue, task)
    return buckets[bucket_index(seconds)], total, int(seconds * 1e6)
