"""The configuration a TaskQueueTest runs: the user's own YAML — tasks, queues, retries, timeouts, limits,
workflows exactly as written — with what is about the deployment, not the tasks, replaced: which Redis and
key prefix, how many worker processes, no autoscaler, no HTTP server and (unless asked) no periodic
schedules, whose fires would mix into the test's tasks."""

from __future__ import annotations

from typing import Any

import yaml

# Environment variables that override the file (config.ENV_OVERRIDES) for what the test decides: not passed
# to the runner, or a user's REDIS_URL would point it at their real Redis.
DECIDED_BY_THE_TEST = ("REDIS_URL", "TASK_QUEUE_WORKERS", "TASK_QUEUE_SCHEDULER")
_REDIS_KEPT = ("pool_size", "connection_timeout", "command_timeout")


def runner_config(text: str, *, redis_url: str, key_prefix: str, workers: int, schedules: bool) -> bytes:
    """The YAML text of the test's runner. `text` is the user's file, already validated; its `${VAR}`s stay
    for the runner to expand, as in production."""
    data: dict[str, Any] = yaml.safe_load(text)
    user_redis = data.get("redis") or {}
    data["redis"] = {
        **{key: user_redis[key] for key in _REDIS_KEPT if key in user_redis},
        "url": redis_url,
        "key_prefix": key_prefix,
        "embedded": {"enabled": False},  # never the first-run private server (nor port 6379)
    }
    data["workers"] = {**(data.get("workers") or {}), "initial_count": workers}
    data["autoscaler"] = {"enabled": False}
    data["scheduler"] = {**(data.get("scheduler") or {}), "enabled": True}  # delays and retries need the timer
    data["http"] = {"enabled": False}
    if not schedules:
        data.pop("schedules", None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
