"""The client on its own, against real Redis: routing by the published table, ids, threads, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import msgpack
import pytest

from taskqueue import envelope
from taskqueue.client import AsyncClient, Client, chain, step
from taskqueue.errors import PayloadTooLarge, UnknownTask
from tests.conftest import RedisServer


def _publish(client: Client, max_payload: int = 1 << 20) -> None:
    """What a runner publishes at start-up (tq:tasks, tq:queues)."""
    client.redis.hset("tq:tasks", "noop", msgpack.packb({"queue": "default", "max_payload": max_payload}))
    client.redis.hset("tq:queues", "default", msgpack.packb({"priority": 5, "max_length": None}))


def test_messages_are_valid_envelopes_with_unique_ids(redis_url: str) -> None:
    client = Client(redis_url)
    _publish(client)
    ids = [client.enqueue("noop", 1, k="v") for _ in range(3)] + client.enqueue_many([("noop", (), {})] * 3)
    assert len(set(ids)) == 6
    queued = [envelope.decode(m, 1 << 20) for m in client.redis.lrange("tq:queue:default", 0, -1)]
    assert sorted(e.id for e in queued) == sorted(ids)
    assert [(e.args, e.kwargs) for e in queued if e.args] == [((1,), {"k": "v"})] * 3


def test_unknown_task_and_oversized_payload_are_refused(redis_url: str) -> None:
    client = Client(redis_url)
    with pytest.raises(UnknownTask, match="start the runner once"):
        client.enqueue("noop")
    _publish(client, max_payload=100)
    with pytest.raises(UnknownTask, match="unknown task 'nope'"):
        client.enqueue("nope")
    with pytest.raises(PayloadTooLarge):
        client.enqueue("noop", "x" * 200)
    with pytest.raises(ValueError, match=r"limits\.max_delay"):
        client.enqueue("noop", delay=1e300)  # it could never run
    with pytest.raises(ValueError, match=r"limits\.max_delay"):
        client.enqueue_many([("noop", (), {})], delay=float("nan"))
    assert client.redis.llen("tq:queue:default") == 0


def test_a_named_queue_needs_no_task_table(redis_url: str) -> None:
    """Before any runner published its routes, a producer that names the queue can enqueue (a worker
    dead-letters an undeclared task, as for redis-cli); without a queue the error says what to do."""
    client = Client(redis_url)
    with pytest.raises(UnknownTask, match="or name the queue") as refused:
        client.enqueue("send_email", to="a@example.com")
    assert "redis.key_prefix is not 'tq' needs Client(..., key_prefix=...)" in str(refused.value)
    other = Client(redis_url, key_prefix="rt")
    with pytest.raises(UnknownTask, match=r"no task table at rt:tasks: .* is not 'rt'"):
        other.enqueue("send_email")
    task_id = client.enqueue("send_email", to="a@example.com", queue="default")
    (raw,) = client.redis.lrange("tq:queue:default", 0, -1)
    env = envelope.decode(raw, 1 << 20)
    assert (env.id, env.task, dict(env.kwargs)) == (task_id, "send_email", {"to": "a@example.com"})


def test_threads_share_one_client(redis_url: str) -> None:
    client = Client(redis_url)
    _publish(client)

    def produce() -> None:
        for _ in range(500):
            client.enqueue("noop")

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert client.redis.llen("tq:queue:default") == 2000


def test_enqueue_survives_a_redis_restart(own_redis: RedisServer) -> None:
    client = Client(own_redis.url)
    _publish(client)
    client.enqueue("noop")
    own_redis.stop(kill=True)
    own_redis.start()  # AOF: the first message and the table survive; the client's connection does not
    client.enqueue("noop")
    assert client.redis.llen("tq:queue:default") == 2


def test_async_client_from_many_coroutines_survives_a_restart_and_a_cancelled_call(own_redis: RedisServer) -> None:
    """The asyncio client's own connection for LPUSH: shared by concurrent coroutines (the ones that find it
    busy take the pool), dropped when Redis restarts or when a call is cancelled between request and reply
    (so no later call reads that reply as its own)."""
    sync = Client(own_redis.url)
    _publish(sync)

    async def scenario() -> tuple[int, int, int]:
        client = AsyncClient(own_redis.url)

        async def produce() -> None:
            for _ in range(200):
                await client.enqueue("noop")

        await asyncio.wait_for(asyncio.gather(*(produce() for _ in range(10))), timeout=60)
        concurrent = int(await client.redis.llen("tq:queue:default"))
        own_redis.stop(kill=True)
        own_redis.start()  # AOF: what was acknowledged survives; the connection does not
        await client.enqueue("noop")
        after_restart = int(await client.redis.llen("tq:queue:default"))
        for _ in range(20):  # cancel calls at their first suspension: request sent, reply not yet read
            call = asyncio.ensure_future(client.enqueue("noop"))
            await asyncio.sleep(0)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
        ids = [await client.enqueue("noop", n) for n in range(5)]  # each must get its own reply
        queued = [envelope.decode(m, 1 << 20) for m in await client.redis.lrange("tq:queue:default", 0, 4)]
        await client.aclose()
        assert sorted(e.id for e in queued) == sorted(ids)
        return concurrent, after_restart, len(ids)

    concurrent, after_restart, last = asyncio.run(scenario())
    assert (concurrent, after_restart, last) == (2000, 2001, 5)


def test_from_config_uses_the_deployments_redis_section(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19, item 4: a deployment with `key_prefix: rt`; the client reads it (and ${VAR}) from the YAML."""
    config = tmp_path / "task-queue.yaml"
    config.write_text(
        'redis: {url: "${APP_REDIS}", key_prefix: rt}\ntasks:\n  dump: {path: "json:dumps"}\n', encoding="utf-8"
    )
    monkeypatch.setenv("APP_REDIS", redis_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    client = Client.from_config(config)
    task_id = client.enqueue("dump", 1, queue="default")
    raw = client.redis.lrange("rt:queue:default", 0, -1)
    assert [envelope.decode(m, 1 << 20).id for m in raw] == [task_id]

    async def scenario() -> str:
        aclient = AsyncClient.from_config(config)
        try:
            return await aclient.enqueue("dump", 2, queue="default")
        finally:
            await aclient.aclose()

    second = asyncio.run(scenario())
    assert client.redis.llen("rt:queue:default") == 2 and second != task_id


def test_cancel_of_an_unknown_id_leaves_no_trace_and_a_second_cancel_says_so(redis_url: str) -> None:
    """#28.9: an id found nowhere is not_found and recorded nowhere (status stays None, a second cancel is
    not_found again); a task or workflow cancelled twice says already_cancelled the second time."""
    client = Client(redis_url)
    _publish(client)
    assert client.cancel("never-enqueued") == "not_found"
    assert client.status("never-enqueued") is None
    assert client.cancel("never-enqueued") == "not_found"
    assert client.cancel("wf-never-started") == "not_found"
    assert client.redis.zcard("tq:cancelled") == 0
    assert client.redis.keys("tq:result:*") == []

    queued = client.enqueue("noop", 1)
    assert client.cancel(queued) == "cancelled"
    assert client.cancel(queued) == "already_cancelled"
    flow = client.enqueue_workflow(chain(step("noop", 1), step("noop", 2)))
    assert client.cancel(flow) == "cancelled"
    assert client.cancel(flow) == "already_cancelled"
    assert client.cancel(f"{flow}.0") == "already_cancelled"  # its queued step, cancelled with it

    async def twice() -> list[str]:
        producer = AsyncClient(redis_url)
        try:
            task_id = await producer.enqueue("noop", 2)
            return [await producer.cancel(task_id), await producer.cancel(task_id), await producer.cancel("nope")]
        finally:
            await producer.aclose()

    assert asyncio.run(twice()) == ["cancelled", "already_cancelled", "not_found"]
    assert client.status("nope") is None
    client.close()
