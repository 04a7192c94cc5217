"""The idle path (worker.py `_watch`): a dry worker's watcher moves what arrives into its claim list and starts
it at once. Nothing claimed is ever lost: the next exchange records it, retirement hands back what was not
recorded, recovery of a dead worker counts its lost attempt, and the orphan pass finds a claim list nobody holds.
One worker in-process against a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from taskqueue import envelope
from taskqueue.client import AsyncClient
from taskqueue.config import registry
from taskqueue.runner import recovery
from taskqueue.store.broker import Broker
from taskqueue.store.pending import PendingReader
from taskqueue.worker.worker import Worker
from tests.test_worker import load_config

CONFIG = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  record: {path: "testjobs.tasks:arecord", result_ttl: 0}
  held: {path: "testjobs.tasks:agated", result_ttl: 0}
workers: {initial_count: 1, max_concurrent_tasks: SLOTS, shutdown_grace_period: 100ms}
http: {enabled: false}
"""

PRIORITIES = """
redis: {url: "REDIS_URL"}
python_path: ["HERE"]
tasks:
  order: {path: "testjobs.tasks:order", result_ttl: 0}
queues: {high: {priority: 10}, default: {priority: 5}, low: {priority: 1}}
workers: {initial_count: 1, max_concurrent_tasks: 1}
http: {enabled: false}
"""


@pytest.fixture(autouse=True)
def _tasks_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)  # where testjobs' task bodies record their runs


async def until(check: Any, what: str, seconds: float = 10.0) -> None:
    """Poll an async condition every 10 ms, at most `seconds`."""
    for _ in range(int(seconds * 100)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Unanswered:
    """Every exchange of `broker` after the first waits until `answer` is set (a reply still on the wire)."""

    def __init__(self, broker: Broker) -> None:
        self.answer = asyncio.Event()
        self.calls = 0
        self._real = broker.exchange
        broker.exchange = self._exchange  # type: ignore[method-assign,assignment]

    async def _exchange(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            await self.answer.wait()
        return await self._real(*args)


def test_an_idle_worker_starts_a_pushed_task_before_any_exchange_answers(tmp_path: Path, redis_url: str) -> None:
    """Once the queues ran dry, a pushed task starts on the watcher's BLMOVE alone: here every exchange after
    the first never answers, and the task still runs; the exchange that finally answers records the claim,
    so nothing is left in the claim list or the in-flight hash."""
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "5"))

    async def scenario() -> tuple[int, int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-idle")
        exchanges = Unanswered(broker)
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await until(lambda: _true(worker.armed.is_set()), "the first exchange to find the queues dry")
        await broker.publish_tables()  # the queue names status() looks under
        message = envelope.new("record", (7,))
        await client.lpush(broker.keys.queue("default"), message.encode())
        await until(lambda: client.hexists("test:runs", "7"), "the claimed task to run")
        claimed = int(await client.llen(broker.keys.claim("w-idle", "default")))  # not recorded yet
        producer = AsyncClient(redis_url)
        seen = await producer.status(message.id)  # found in the claim list, like a task in the in-flight hash
        await producer.aclose()
        pending = PendingReader(redis.Redis.from_url(redis_url), broker.keys, broker.queue_names).read(0)
        exchanges.answer.set()
        await until(lambda: _true(not worker.executor.pending_outbox()), "the exchange to record and ack it")
        left = int(await client.llen(broker.keys.claim("w-idle", "default")))
        inflight = int(await client.hlen(broker.keys.inflight("w-idle")))
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        await broker.close()
        await client.aclose()
        assert seen is not None and seen["state"] == "running" and seen["worker"] == "w-idle"
        assert pending.inflight == 1 and not pending.empty  # taskqueue.testing's drain waits for it
        return exchanges.calls, claimed, left, inflight

    calls, claimed, left, inflight = asyncio.run(scenario())
    assert calls >= 2 and claimed == 1  # it ran while its exchange was still unanswered
    assert (left, inflight) == (0, 0)


async def _true(value: bool) -> bool:
    return value


def test_a_stopping_worker_hands_back_its_unrecorded_claims_and_strays(tmp_path: Path, redis_url: str) -> None:
    """Retirement records the claims of tasks that are running (then hands them back, as it does every
    unfinished task) and hands back what is in a claim list but never reached the worker (a lost reply)."""
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "5"))

    async def scenario() -> tuple[list[Any], int, int, bool]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-stop")
        queue, claims = broker.keys.queue("default"), broker.keys.claim("w-stop", "default")
        Unanswered(broker)  # never answered: the claim stays unrecorded until retirement
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await until(lambda: _true(worker.armed.is_set()), "the queues to be dry")
        await client.lpush(queue, envelope.new("held", (1,), {"gate": "test:never"}).encode())
        await until(lambda: _true(len(worker.executor.held) == 1), "the claimed task to start")
        await client.lpush(claims, envelope.new("record", ("stray",)).encode())  # moved, reply never read
        stop.set()
        code = await asyncio.wait_for(running, timeout=20)
        queued: list[Any] = await client.lrange(queue, 0, -1)
        inflight = int(await client.hlen(broker.keys.inflight("w-stop")))
        left = int(await client.exists(claims))
        registered = await client.zscore(broker.keys.workers, "w-stop") is not None
        await broker.close()
        await client.aclose()
        assert code == 0
        return queued, inflight, left, registered

    queued, inflight, left, registered = asyncio.run(scenario())
    args = sorted(str(envelope.decode(raw, 1 << 20).args[0]) for raw in queued)
    assert args == ["1", "stray"]
    assert (inflight, left, registered) == (0, 0, False)


def test_recovering_a_dead_worker_counts_the_lost_attempt_of_what_it_had_claimed(
    tmp_path: Path, redis_url: str
) -> None:
    """A worker SIGKILLed right after its watcher's BLMOVE: the claimed message was maybe running, so recovery
    counts its attempt, like any message in the in-flight hash, and re-queues it (a task that keeps killing
    its worker this way still ends dead-lettered)."""
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "5"))

    async def scenario() -> tuple[tuple[int, int], list[Any], int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await client.zadd(broker.keys.workers, {"w-dead": 1})  # a lease long expired
        await client.lpush(broker.keys.claim("w-dead", "default"), envelope.new("record", (3,)).encode())
        await client.lpush(broker.keys.claim("w-dead", "elsewhere"), envelope.new("record", (4,)).encode())
        counts = await recovery.recover_worker(broker, "w-dead")
        queued: list[Any] = await client.lrange(broker.keys.queue("default"), 0, -1)
        queued += await client.lrange(broker.keys.queue("elsewhere"), 0, -1)
        keys = len([k async for k in client.scan_iter(match=broker.keys.claims_prefix + "*")])
        inflight = int(await client.hlen(broker.keys.inflight("w-dead")))
        await broker.close()
        await client.aclose()
        return counts, queued, keys, inflight

    counts, queued, keys, inflight = asyncio.run(scenario())
    assert counts == (2, 0)
    decoded = sorted((envelope.decode(raw, 1 << 20).args[0], envelope.decode(raw, 1 << 20).attempt) for raw in queued)
    assert decoded == [(3, 1), (4, 1)]  # each back in the queue it was claimed from, its lost attempt counted
    assert (keys, inflight) == (0, 0)


def test_a_claim_list_without_a_registration_is_recovered_by_the_orphan_pass(tmp_path: Path, redis_url: str) -> None:
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "5"))

    async def scenario() -> tuple[int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await client.lpush(broker.keys.claim("w-gone", "default"), envelope.new("record", (5,)).encode())
        await client.lpush(broker.keys.claim("w-here", "default"), envelope.new("record", (6,)).encode())
        await client.zadd(broker.keys.workers, {"w-here": 2**40})
        watch = recovery.OrphanWatch()
        first, second = await watch.check(broker), await watch.check(broker)
        queued = int(await client.llen(broker.keys.queue("default")))
        await broker.close()
        await client.aclose()
        return first, second, queued

    assert asyncio.run(scenario()) == (0, 1, 1)  # only the unregistered one, on the second look


def test_a_claim_with_no_slot_free_goes_back_to_the_front_of_its_queue(tmp_path: Path, redis_url: str) -> None:
    """Each queue has its own watcher: with one slot, two may both take a message. The second is not started
    beyond the slots; the next exchange puts it back in front of its queue, where the worker takes it later."""
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "1"))

    async def scenario() -> tuple[list[str], int, int]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-full")
        queue, claims = broker.keys.queue("default"), broker.keys.claim("w-full", "default")
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await until(lambda: _true(worker.armed.is_set()), "the queues to be dry")
        await client.lpush(queue, envelope.new("held", (1,), {"gate": "test:open"}).encode())
        await until(lambda: _true(len(worker.executor.held) == 1), "the first claim to start")
        second = envelope.new("record", (2,)).encode()
        await client.lpush(claims, second)  # as another queue's watcher would, at the same moment
        worker._claimed("default", second)
        most = len(worker.executor.held)
        await until(lambda: client.exists(queue), "the second claim to go back to its queue")
        await client.set("test:open", 1)
        await until(lambda: client.hexists("test:runs", "2"), "the second task to run in its turn")
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        ran: list[Any] = await client.hkeys("test:runs")
        runs = sorted(k.decode() for k in ran)
        left = int(await client.exists(claims))
        await broker.close()
        await client.aclose()
        return runs, most, left

    runs, most, left = asyncio.run(scenario())
    assert (runs, most, left) == (["1", "2"], 1, 0)


def test_the_watchers_keep_strict_priority_when_work_is_already_queued(tmp_path: Path, redis_url: str) -> None:
    """At start, with every queue full, the pump's first exchange takes in priority order: the watchers are
    armed only once the queues ran dry, so none claims a low-priority message ahead of the high ones."""
    cfg = load_config(tmp_path, redis_url, PRIORITIES)

    async def scenario() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await client.lpush(broker.keys.queue("low"), envelope.new("order", ("low",)).encode())
        await client.lpush(
            broker.keys.queue("high"), *[envelope.new("order", (f"high{n}",)).encode() for n in range(3)]
        )
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-prio")
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await until(lambda: _orders(client, 4), "all four to run")
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        order: list[Any] = await client.lrange("test:order", 0, -1)
        await broker.close()
        await client.aclose()
        return order

    assert asyncio.run(scenario())[-1] == b"low"


async def _orders(client: Any, n: int) -> bool:
    return int(await client.llen("test:order")) >= n


def test_a_claim_never_takes_a_slot_the_exchange_under_way_may_fill(tmp_path: Path, redis_url: str) -> None:
    """The soak's loss, made deterministic: while an exchange that may take N messages is under way, another
    queue's watcher claims one more. Started too, it would run one task beyond the slots, the next exchange
    would ask for a negative number and reuse a token, and one task's ack would settle another's (a retry
    then found its token gone and was dropped). The claim goes back instead; every task runs exactly once."""
    cfg = load_config(tmp_path, redis_url, CONFIG.replace("SLOTS", "2"))

    async def scenario() -> tuple[int, dict[bytes, bytes], set[bytes]]:
        client = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        worker = Worker(cfg, registry.build(cfg), broker, client, "w-race")
        real_exchange = broker.exchange
        hold, held_back = asyncio.Event(), asyncio.Event()
        hold.set()
        most = 0
        tokens: set[bytes] = set()
        real_start = worker.executor.start

        def start(item: Any) -> None:
            nonlocal most
            assert item.token not in tokens, f"token {item.token!r} used twice"
            tokens.add(item.token)
            real_start(item)
            most = max(most, len(worker.executor.held))

        async def exchange(*args: Any) -> Any:
            if not hold.is_set():
                held_back.set()
                await hold.wait()
            return await real_exchange(*args)

        worker.executor.start = start  # type: ignore[method-assign]
        broker.exchange = exchange  # type: ignore[method-assign,assignment]
        stop, fast_stop = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop, fast_stop))
        await until(lambda: _true(worker.armed.is_set()), "the queues to be dry")
        hold.clear()  # the exchange that records the first claim will wait, with one slot reserved
        await client.lpush(broker.keys.queue("default"), envelope.new("held", (1,), {"gate": "test:go"}).encode())
        await until(lambda: _true(held_back.is_set()), "the exchange recording the claim to be under way")
        await client.lpush(broker.keys.queue("high_priority"), envelope.new("held", (2,), {"gate": "test:go"}).encode())
        await client.lpush(broker.keys.queue("default"), envelope.new("held", (3,), {"gate": "test:go"}).encode())
        await until(lambda: _true(bool(worker.executor.unclaims)), "the second watcher's claim to be turned back")
        hold.set()
        await until(lambda: _true(len(worker.executor.held) == 2), "the exchange to take the turned-back claim")
        await client.set("test:go", 1)
        await until(lambda: _runs(client, 3), "all three to run")
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        runs: dict[Any, Any] = await client.hgetall("test:runs")
        await broker.close()
        await client.aclose()
        return most, runs, tokens

    most, runs, tokens = asyncio.run(scenario())
    assert most == 2
    assert runs == {b"1": b"1", b"2": b"1", b"3": b"1"}
    assert len(tokens) == 3


async def _runs(client: Any, n: int) -> bool:
    return int(await client.hlen("test:runs")) >= n
