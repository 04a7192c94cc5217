"""Outcome hooks against a real Redis: an effect is applied by the settle script itself, only when the worker
still held the task; a feature can hold a run back without counting an attempt."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis

from taskqueue import config as config_mod
from taskqueue import envelope
from taskqueue.config import registry
from taskqueue.envelope import Envelope
from taskqueue.features import Feature
from taskqueue.features.limits import Gate
from taskqueue.store.broker import Broker
from taskqueue.worker.worker import Worker
from tests.test_worker import load_config

CONFIG = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  echo: {path: "testjobs.tasks:echo", result_ttl: 60s}
workers: {initial_count: 1, max_concurrent_tasks: 5}
scheduler: {tick_interval: 50ms}
http: {enabled: false}
"""


def _config(tmp_path: Path, redis_url: str) -> config_mod.Config:
    return load_config(tmp_path, redis_url, CONFIG)


def test_an_effect_applies_only_with_the_ack_of_a_token_still_held(tmp_path: Path, redis_url: str) -> None:
    cfg = _config(tmp_path, redis_url)

    async def scenario() -> tuple[bool, bool, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await client.lpush(broker.keys.queue("default"), envelope.new("echo", (1,)).encode())
        (taken,) = await broker.exchange("w-hooks", [], {}, [], 1, 0, seq=1)
        mine = ("result", broker.keys.result("mine"), 60000, b"\x01")
        gone = ("result", broker.keys.result("gone"), 60000, b"\x02")
        # b"99" was never taken: its effect is skipped, and the block after it is still read right
        await broker.exchange("w-hooks", [], {}, [(b"99", [gone]), (taken.token, [mine])], 0, 1)
        found = (await client.exists(broker.keys.result("mine")), await client.exists(broker.keys.result("gone")))
        left = int(await client.hlen(broker.keys.inflight("w-hooks")))
        await broker.close()
        await client.aclose()
        return bool(found[0]), bool(found[1]), left

    assert asyncio.run(scenario()) == (True, False, 0)


class _NotYet(Feature):
    """Gates every run of `echo` behind a rate of 1 start per 200 ms whose window the test fills first: the
    first look says "not yet", the run waits in Redis and starts once the window has moved on."""

    window = "tq:limit:echo:rate0:test"

    def wants(self, task: Any) -> bool:
        return True

    def admission(self, env: Envelope, task: Any, queue: str) -> Gate:
        spec = json.dumps({"r": [[self.window, 1, 200]], "why": "test"})
        return Gate(spec, "tq:limit:echo:waiting:test", None, "rate_limited:default:echo")


def test_a_feature_holds_a_run_back_without_counting_an_attempt(tmp_path: Path, redis_url: str) -> None:
    cfg = _config(tmp_path, redis_url)

    async def scenario() -> tuple[Any, float, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await broker.publish_tables()
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-hold")
        worker.executor.hooks.features += (_NotYet(),)
        seconds, micros = await client.time()
        await client.zadd(_NotYet.window, {"someone": seconds * 1000 + micros // 1000})  # the window is full
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await client.lpush(broker.keys.queue("default"), envelope.Envelope("echo", "held-1", (7,)).encode())
        raw = None
        for _ in range(250):  # bounded: the result (5 s); the promotion is the test's own, below
            await asyncio.sleep(0.02)
            await broker.promote(100)  # the runner's delayed-task timer, in-process
            raw = await client.get(broker.keys.result("held-1"))
            if raw is not None:
                break
        took = loop.time() - began
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        retried = int((await broker.stats()).get("retried:default:echo", 0))
        await broker.close()
        await client.aclose()
        return msgpack.unpackb(raw) if raw else None, took, retried

    body, took, retried = asyncio.run(scenario())
    assert body is not None and body["status"] == "ok"
    assert body["value"]["attempt"] == 1  # the hold-back was not an attempt
    assert retried == 0
    assert took >= 0.2
