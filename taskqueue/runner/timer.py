"""The delayed-task timer: moves due delayed tasks (delays, retries, held-back runs) to their ready lists
(promote.lua) at the next due time, or at once when a producer adds an earlier one (it publishes on the
wake channel). Not to be confused with periodic schedules (schedules.py), which only enqueue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from redis.exceptions import RedisClusterException, RedisError

from taskqueue._loop import outage, raise_if_cancelled
from taskqueue.config import Config
from taskqueue.store.broker import Broker

log = logging.getLogger("taskqueue.runner")


class Host(Protocol):
    """What the timer needs of its runner: the configuration and broker of the moment, and where to record
    its last pass (for /health)."""

    config: Config
    broker: Broker
    stopping: bool
    last_tick: float | None


async def run(host: Host) -> None:
    settings = host.config.scheduler
    broker = host.broker  # a reload restarts the timer with the new one
    wake = asyncio.Event()
    listener = asyncio.create_task(_listen_for_wakes(broker, wake))
    try:
        while not host.stopping:
            raise_if_cancelled()
            wake.clear()  # before promoting: a wake that arrives meanwhile makes the next wait return at once
            try:
                moved, next_due = await broker.promote(settings.max_tasks_per_tick)
            except (RedisError, OSError) as exc:
                outage.failed("promoting due delayed tasks", exc)
                await asyncio.sleep(1.0)
                continue
            outage.answered()
            host.last_tick = time.time()
            if moved >= settings.max_tasks_per_tick:
                continue  # more are due: next round at once
            wait = settings.tick_interval_s
            if next_due is not None:
                wait = max(0.0, min(wait, next_due / 1000 - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
    finally:
        listener.cancel()
        await asyncio.wait([listener], timeout=5.0)  # redis-py may swallow a cancellation (see _loop.py)


async def _listen_for_wakes(broker: Broker, wake: asyncio.Event) -> None:
    """A shortcut only: the timer also looks every tick_interval. With Cluster, redis-py's ClusterPubSub
    subscribes on the node of the channel's hash tag (PUBLISH reaches every node); it raises
    RedisClusterException, not a RedisError, when no node serves that slot, hence the wider except."""
    while True:
        raise_if_cancelled()
        pubsub = broker.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(broker.keys.delayed_wake)
            async for _ in pubsub.listen():
                wake.set()
        except (RedisError, RedisClusterException, OSError):
            wake.set()  # let the timer look again; it backs off by itself while Redis is away
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await pubsub.aclose()
