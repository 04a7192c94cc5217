"""One worker in-process against a real Redis: the pump's bookkeeping after a failed round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from taskqueue import config as config_mod
from taskqueue import envelope, registry
from taskqueue.broker import Broker
from taskqueue.worker import Worker

CONFIG = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  echo: {path: "testjobs.tasks:echo", result_ttl: 0}
workers: {initial_count: 1, max_concurrent_tasks: 5}
http: {enabled: false}
"""


def test_after_a_failed_round_trip_the_messages_just_taken_are_not_handed_back(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "task-queue.yaml"
    path.write_text(CONFIG.replace("REDIS_URL", redis_url).replace("HERE", str(Path(__file__).parent / "e2e")))
    cfg = config_mod.load(path)

    async def scenario() -> tuple[int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w1")
        await client.lpush(broker.keys.queue("default"), *[envelope.new("echo", (n,)).encode() for n in range(3)])
        worker._pump_failed = True  # as after an outage: the next good round trip reconciles
        pump = asyncio.create_task(worker._pump())
        worker.wake.set()
        for _ in range(200):  # bounded: until the three tasks ran and were acknowledged
            await asyncio.sleep(0.01)
            if int((await broker.stats()).get("processed:default:echo", 0)) == 3 and not worker.held:
                worker.wake.set()
                if not await client.hlen(broker.keys.inflight("w1")):
                    break
        pump.cancel()
        await asyncio.wait([pump], timeout=2)
        processed = int((await broker.stats()).get("processed:default:echo", 0))
        queued = int(await client.llen(broker.keys.queue("default")))
        inflight = int(await client.hlen(broker.keys.inflight("w1")))
        await client.aclose()
        return processed, queued, inflight

    processed, queued, inflight = asyncio.run(scenario())
    assert (processed, queued, inflight) == (3, 0, 0)  # ran once each; nothing handed back to run again
