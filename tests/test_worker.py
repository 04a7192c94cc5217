"""One worker in-process against a real Redis: the pump's bookkeeping after a failed round trip; deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskqueue import config as config_mod
from taskqueue import envelope
from taskqueue.config import registry
from taskqueue.runner import recovery
from taskqueue.store.broker import Broker
from taskqueue.store.stats import ORPHANS_FIELD
from taskqueue.worker import worker as worker_mod
from taskqueue.worker.worker import EXIT_RECYCLED, Worker

CONFIG = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  echo: {path: "testjobs.tasks:echo", result_ttl: 0}
workers: {initial_count: 1, max_concurrent_tasks: 5}
http: {enabled: false}
"""


def load_config(folder: Path, redis_url: str, text: str) -> config_mod.Config:
    """A worker config on the test Redis, importing the e2e test tasks (tests/e2e/testjobs)."""
    path = folder / "task-queue.yaml"
    path.write_text(text.replace("REDIS_URL", redis_url).replace("HERE", str(Path(__file__).parent / "e2e")))
    return config_mod.load(path)


def test_after_a_failed_round_trip_the_messages_just_taken_are_not_handed_back(tmp_path: Path, redis_url: str) -> None:
    cfg = load_config(tmp_path, redis_url, CONFIG)

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
            if int((await broker.stats()).get("processed:default:echo", 0)) == 3 and not worker.executor.held:
                worker.wake.set()
                if not await client.hlen(broker.keys.inflight("w1")):
                    break
        pump.cancel()
        await asyncio.wait([pump], timeout=2)
        processed = int((await broker.stats()).get("processed:default:echo", 0))
        queued = int(await client.llen(broker.keys.queue("default")))
        inflight = int(await client.hlen(broker.keys.inflight("w1")))
        await broker.close()
        await client.aclose()
        return processed, queued, inflight

    processed, queued, inflight = asyncio.run(scenario())
    assert (processed, queued, inflight) == (3, 0, 0)  # ran once each; nothing handed back to run again


DEADLINES = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  sleep_async: {path: "testjobs.tasks:sleep_async", result_ttl: 60s, max_retries: 0}
  sleep_sync: {path: "testjobs.tasks:sleep_sync", result_ttl: 60s, max_retries: 0}
workers: {initial_count: 1, max_concurrent_tasks: 5}
http: {enabled: false}
"""


def test_each_task_gets_its_own_deadline_from_one_shared_timer(tmp_path: Path, redis_url: str) -> None:
    """A long deadline armed first, then shorter ones: the timer re-arms for the earliest, every overrun is
    cut at its own deadline and dead-lettered as a timeout, and the task within its deadline succeeds."""
    cfg = load_config(tmp_path, redis_url, DEADLINES)
    plan = {"ok": (0.3, 5.0), "short": (30.0, 0.2), "middle": (30.0, 0.6)}  # id: (sleep s, timeout s)

    async def scenario() -> tuple[dict[str, Any], dict[str, str], float]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await broker.publish_tables()
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-deadlines")
        messages = [
            envelope.Envelope("sleep_async", task_id, (sleep,), timeout=timeout).encode()
            for task_id, (sleep, timeout) in plan.items()
        ]
        await client.lpush(broker.keys.queue("default"), *messages)  # RPOP order: ok, short, middle
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        began = asyncio.get_running_loop().time()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        for _ in range(500):  # bounded: until all three settled (10 s)
            await asyncio.sleep(0.02)
            if await client.hlen(broker.keys.dead) == 2 and await client.exists(broker.keys.result("ok")):
                break
        took = asyncio.get_running_loop().time() - began
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        results = {task_id: await client.get(broker.keys.result(task_id)) for task_id in plan}
        dead = {record.id: record.error for record in await broker.dead_records(list(plan))}
        await broker.close()
        await client.aclose()
        return results, dead, took

    results, dead, took = asyncio.run(scenario())
    assert results["ok"] is not None and b"ok" in results["ok"]
    assert dead == {"short": "timed out after 0.2s", "middle": "timed out after 0.6s"}
    assert took < 5.0  # cut at their deadlines (0.2 s, 0.6 s), not at the 5 s deadline armed first


def test_the_pump_reloads_its_script_after_redis_forgot_it(tmp_path: Path, redis_url: str) -> None:
    """The pump sends EVALSHA on its own connection; after SCRIPT FLUSH (as after a restart without the
    script cache) the NOSCRIPT reply is not an outage: the script is loaded and the tasks run, once each."""
    cfg = load_config(tmp_path, redis_url, CONFIG)

    async def scenario() -> int:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-noscript")
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        queue = broker.keys.queue("default")
        processed = 0
        for batch in range(2):
            await client.lpush(queue, *[envelope.new("echo", (batch, n)).encode() for n in range(5)])
            for _ in range(500):  # bounded: until this batch ran (10 s)
                await asyncio.sleep(0.02)
                processed = int((await broker.stats()).get("processed:default:echo", 0))
                if processed == 5 * (batch + 1):
                    break
            await client.script_flush()
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        await broker.close()
        await client.aclose()
        return processed

    assert asyncio.run(scenario()) == 10


def test_a_worker_stopped_while_its_exchange_awaits_the_reply_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    """The loss of issue 12, made deterministic: the exchange script ran (the messages are in this worker's
    in-flight hash) but the pump is still waiting for the reply when the worker is told to stop. Whatever
    the pump never received must go back to the queue (or stay under a live lease), never be orphaned."""
    cfg = load_config(tmp_path, redis_url, CONFIG)

    async def scenario() -> tuple[int, int, bool]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-cut")
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        real_exchange = broker.exchange
        never = asyncio.Event()

        async def reply_never_arrives(*args: Any) -> Any:
            taken = await real_exchange(*args)
            if taken:  # the script moved them into the hash; the reply is "still on the wire"
                stop.set()
                await never.wait()
            return taken

        broker.exchange = reply_never_arrives  # type: ignore[method-assign,assignment]
        queue = broker.keys.queue("default")
        await client.lpush(queue, *[envelope.new("echo", (n,)).encode() for n in range(3)])
        await asyncio.wait_for(worker.run(stop, fast_stop), timeout=20)
        queued = int(await client.llen(queue))
        inflight = int(await client.hlen(broker.keys.inflight("w-cut")))
        registered = await client.zscore(broker.keys.workers, "w-cut") is not None
        await broker.close()
        await client.aclose()
        return queued, inflight, registered

    queued, inflight, registered = asyncio.run(scenario())
    assert (queued, inflight, registered) == (3, 0, False)  # all handed back, and the worker retired cleanly


def test_an_in_flight_hash_without_a_registration_is_recovered_on_the_second_look(
    tmp_path: Path, redis_url: str
) -> None:
    """Defence in depth: messages in the in-flight hash of a worker id that is not in the workers zset have no
    lease that could expire. The reaper's orphan pass recovers them once seen twice (a late worker
    re-registers in between), counts them, and leaves registered workers alone."""
    cfg = load_config(tmp_path, redis_url, CONFIG)

    async def scenario() -> tuple[int, int, int, int, int, str]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        orphan, live = broker.keys.inflight("w-orphan"), broker.keys.inflight("w-live")
        message = envelope.new("echo", ("lost?",)).encode()
        await client.hset(orphan, "1", b"default|" + message)
        await client.hset(live, "1", b"default|" + envelope.new("echo", ("mine",)).encode())
        await client.zadd(broker.keys.workers, {"w-live": 2**40})
        watch = recovery.OrphanWatch()
        first = await watch.check(broker)  # seen once: a suspect only
        second = await watch.check(broker)
        queued: list[Any] = await client.lrange(broker.keys.queue("default"), 0, -1)
        counted = int((await broker.stats()).get(ORPHANS_FIELD, 0))
        left = int(await client.hlen(live))
        await client.delete(live)
        await client.zrem(broker.keys.workers, "w-live")
        await broker.close()
        await client.aclose()
        return first, second, len(queued), counted, left, envelope.decode(queued[0], 1 << 20).args[0]

    first, second, queued, counted, left, arg = asyncio.run(scenario())
    assert (first, second, queued, counted, left, arg) == (0, 1, 1, 1, 1, "lost?")


RECYCLING = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  echo: {path: "testjobs.tasks:echo", result_ttl: 0}
  add: {path: "testjobs.tasks:add", result_ttl: 0}
  reject: {path: "testjobs.tasks:reject"}
  always_fails: {path: "testjobs.tasks:always_fails", max_retries: 3, retry_backoff: {base: 1h, max: 1h, jitter: false}}
workers: {initial_count: 1, max_concurrent_tasks: SLOTS, heartbeat_interval: 50ms, LIMIT}
http: {enabled: false}
"""


def test_max_tasks_per_child_counts_retries_and_dead_letters_and_takes_no_more(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five settled tasks of every kind (2 successes, 2 dead letters, 1 retry) spend a budget of 5: the worker
    takes nothing beyond it, retires by itself through retire.lua (counted there) and asks to be replaced."""
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)  # reject and always_fails record their attempts
    cfg = load_config(tmp_path, redis_url, RECYCLING.replace("SLOTS", "10").replace("LIMIT", "max_tasks_per_child: 5"))

    async def scenario() -> tuple[int, int, dict[str, int], list[Any], int, int, bool]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await broker.publish_tables()
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-max-tasks")
        budget = [("echo", 1), ("reject", "r1"), ("always_fails", "f1"), ("echo", 2), ("reject", "r2")]
        beyond = [("echo", n) for n in (3, 4, 5)]
        queue = broker.keys.queue("default")
        await client.lpush(queue, *[envelope.new(name, (arg,)).encode() for name, arg in budget + beyond])
        code = await asyncio.wait_for(worker.run(asyncio.Event(), asyncio.Event()), timeout=20)  # no signal
        counted = {k: int(v) for k, v in (await broker.stats()).items()}
        queued: list[Any] = await client.lrange(queue, 0, -1)
        left = sorted(envelope.decode(raw, 1 << 20).args[0] for raw in queued)
        delayed = int(await client.zcard(broker.keys.delayed))
        inflight = int(await client.hlen(broker.keys.inflight("w-max-tasks")))
        registered = await client.zscore(broker.keys.workers, "w-max-tasks") is not None
        await broker.close()
        await client.aclose()
        return code, worker.executor.finished, counted, left, delayed, inflight, registered

    code, finished, counted, left, delayed, inflight, registered = asyncio.run(scenario())
    assert (code, finished) == (EXIT_RECYCLED, 5)
    assert counted["processed:default:echo"] == 2
    assert counted["dead:default:reject"] == 2
    assert counted["retried:default:always_fails"] == 1
    assert counted["retirements:max_tasks"] == 1
    assert "retirements:max_memory" not in counted
    assert (left, delayed) == ([3, 4, 5], 1)  # never taken (not taken and handed back); the retry waits its 1h
    assert (inflight, registered) == (0, False)


def test_max_memory_per_child_lets_the_running_task_finish_then_retires(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RSS over the limit (on a heartbeat) while a task runs: no new task is taken, the running one finishes
    within the grace period and is acknowledged, the worker retires, counted as max_memory."""
    limit = 512 << 20
    cfg = load_config(
        tmp_path, redis_url, RECYCLING.replace("SLOTS", "1").replace("LIMIT", f"max_memory_per_child: {limit}")
    )
    checks: list[bool] = []

    async def scenario() -> tuple[int, dict[str, int], int, bool]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-max-memory")

        def rss() -> int:  # above the limit only while a task runs: the retirement starts mid-task
            checks.append(bool(worker.executor.held))
            return limit + 1 if worker.executor.held else limit

        monkeypatch.setattr(worker_mod, "rss_bytes", rss)
        queue = broker.keys.queue("default")
        await client.lpush(queue, *[envelope.new("add", (n, 0, 1.0)).encode() for n in range(2)])  # 1 s each
        code = await asyncio.wait_for(worker.run(asyncio.Event(), asyncio.Event()), timeout=20)
        counted = {k: int(v) for k, v in (await broker.stats()).items()}
        queued = int(await client.llen(queue))
        registered = await client.zscore(broker.keys.workers, "w-max-memory") is not None
        await broker.close()
        await client.aclose()
        return code, counted, queued, registered

    code, counted, queued, registered = asyncio.run(scenario())
    assert code == EXIT_RECYCLED
    assert counted["processed:default:add"] == 1  # the running task finished, was not handed back
    assert counted["retirements:max_memory"] == 1
    assert (queued, registered) == (1, False)  # the second one was never taken
    assert True in checks  # checked on heartbeats, and found over the limit mid-task


def test_rss_bytes_reads_this_processes_resident_memory() -> None:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert abs(worker_mod.rss_bytes() - kib * 1024) < 16 << 20  # the same figure, give or take allocations since


def test_a_request_delivered_twice_or_late_takes_and_counts_once(tmp_path: Path, redis_url: str) -> None:
    """Issue 28: a network delivers a request the worker gave up on late, or the worker's repeat and the original
    both arrive. exchange.lua applies a numbered request once: a repeat answers with what the first took, and an
    older request arriving after a newer one applies nothing."""
    cfg = load_config(tmp_path, redis_url, CONFIG)

    async def scenario() -> tuple[list[list[bytes]], int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        queue = broker.keys.queue("default")
        await client.lpush(queue, *[envelope.new("echo", (n,)).encode() for n in range(4)])
        count = {"processed:default:echo": 1}
        first = await broker.exchange("w-seq", [], count, [], 2, 0, seq=1)
        await client.delete(broker.keys.worker("w-seq"))  # a stall outlasted the lease: the info hash expired
        repeat = await broker.exchange("w-seq", [], count, [], 2, 0, seq=1)  # its answer was lost: sent again
        second = await broker.exchange("w-seq", [], count, [], 1, 2, seq=2)
        late = await broker.exchange("w-seq", [], count, [], 2, 0, seq=1)  # the first copy, delivered last
        tokens = [[t.token for t in found] for found in (first, repeat, second, late)]
        counted = int((await broker.stats()).get("processed:default:echo", 0))
        held, left = int(await client.hlen(broker.keys.inflight("w-seq"))), int(await client.llen(queue))
        await broker.close()
        await client.aclose()
        return tokens, counted, held, left

    tokens, counted, held, left = asyncio.run(scenario())
    assert tokens[:3] == [[b"1", b"2"], [b"1", b"2"], [b"3"]]
    assert (counted, held, left) == (2, 3, 1)  # two requests counted once each; three taken; one still queued


def test_the_audit_hands_back_what_redis_holds_for_a_worker_that_never_received_it(
    tmp_path: Path, redis_url: str
) -> None:
    """Issue 28: a token in a live worker's in-flight hash that the worker does not run (a request applied after
    the worker last looked) goes back to its queue at the worker's next audit, and runs."""
    cfg = load_config(
        tmp_path,
        redis_url,
        CONFIG.replace("max_concurrent_tasks: 5", "max_concurrent_tasks: 5, heartbeat_interval: 200ms"),
    )

    async def scenario() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-audit")
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await asyncio.sleep(0.3)  # the worker's first audit is behind it: only a later one can find the stray
        stray = envelope.new("echo", ("stray",)).encode()
        await client.hset(broker.keys.inflight("w-audit"), "900", b"default|" + stray)
        processed = 0
        for _ in range(500):  # bounded: until the stray ran (10 s)
            await asyncio.sleep(0.02)
            processed = int((await broker.stats()).get("processed:default:echo", 0))
            if processed:
                break
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        left = int(await client.hlen(broker.keys.inflight("w-audit")))
        await broker.close()
        await client.aclose()
        return processed, left

    assert asyncio.run(scenario()) == (1, 0)
