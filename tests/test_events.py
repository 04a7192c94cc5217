"""Lifecycle events (SPEC §13) against a real Redis, in-process: configuration, the producer's `enqueued`,
exchange.lua's `started` and the settle scripts' succeeded/retried/failed/cancelled/workflow_finished, each
written by the script that makes the change; nothing at all with events off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskqueue import canvas, envelope
from taskqueue import config as config_mod
from taskqueue.client import AsyncClient
from taskqueue.config import registry
from taskqueue.errors import ConfigError
from taskqueue.runner.recovery import recover_worker
from taskqueue.store import eventlog
from taskqueue.store.broker import Broker
from taskqueue.store.keys import join_member
from taskqueue.worker.worker import Worker
from tests.test_worker import load_config

CONFIG = """
redis: {url: "REDIS_URL", key_prefix: "PREFIX"}
python_path: ["HERE"]
queues: {default: {priority: 1}, small: {priority: 0, max_length: 100}}
tasks:
  echo: {path: "testjobs.tasks:echo"}
  quiet: {path: "testjobs.tasks:echo", events: false}
  once: {path: "testjobs.tasks:echo", unique_for: 1m}
  fails:
    {path: "testjobs.tasks:always_fails", max_retries: 1, retry_backoff: {base: 10ms, max: 10ms, jitter: false}}
  boxed: {path: "testjobs.tasks:echo", queue: small}
workers: {initial_count: 1, max_concurrent_tasks: 5}
http: {enabled: false}
EVENTS
"""


def _config(tmp_path: Path, redis_url: str, prefix: str, events: str) -> config_mod.Config:
    text = CONFIG.replace("PREFIX", prefix).replace("EVENTS", events)
    return load_config(tmp_path, redis_url, text)


def test_events_are_off_by_default_and_a_task_overrides_the_default(tmp_path: Path, redis_url: str) -> None:
    off = _config(tmp_path, redis_url, "ev0", "")
    assert off.events == config_mod.EventsConfig(False, 100000) and off.event_tasks == ()
    on = _config(tmp_path, redis_url, "ev0", "events: {enabled: true, max_len: 500}")
    assert on.events.max_len == 500
    assert set(on.event_tasks) == {"echo", "once", "fails", "boxed"}  # quiet says events: false


def test_a_bad_events_section_is_a_located_error(tmp_path: Path, redis_url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, redis_url, "ev0", "events: {enabled: yes-please, max_len: 0}")
    text = "\n".join(caught.value.problems)
    assert "task-queue.yaml:" in text and "events.enabled" in text and "events.max_len" in text


async def _run_worker(cfg: config_mod.Config, client: Any, broker: Broker, until: Any, timeout: float = 15) -> None:
    """Run one in-process worker (and the delayed-task timer's promotion) until `until()` holds."""
    worker = Worker(cfg, registry.build(cfg), broker, client, "w-events")
    stop, fast_stop = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(worker.run(stop, fast_stop))
    deadline = time.monotonic() + timeout
    try:
        while not await until():
            assert time.monotonic() < deadline, "condition not reached in time"
            await broker.promote(100)
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)


async def _events(client: Any, stream: str) -> list[dict[str, Any]]:
    return [e for i, f in await client.xrange(stream) if (e := eventlog.entry(i, f)) is not None]


def _by_task(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in events:
        found.setdefault(event["id"], []).append(event["event"])
    return found


def test_each_state_change_is_one_event_in_causal_order(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)  # always_fails records its attempts
    cfg = _config(tmp_path, redis_url, "ev1", "events: {enabled: true}")

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, str]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        await client.delete("ev1:events")
        broker = Broker(client, cfg)
        await broker.publish_tables()
        producer = AsyncClient(redis_url, key_prefix="ev1")
        ids = {
            "ok": await producer.enqueue("echo", 1),
            "quiet": await producer.enqueue("quiet", 2),
            "fails": await producer.enqueue("fails", "k-ev1"),
            "later": await producer.enqueue("echo", 3, delay=0.05),
            "once": await producer.enqueue("once", 4),
            "boxed": await producer.enqueue("boxed", 5),
        }
        ids["cancelled"] = await producer.enqueue("echo", 9, delay=0.05)
        assert await producer.cancel(ids["cancelled"]) == "cancelled"
        many = await producer.enqueue_many([("echo", (6,), {}), ("quiet", (7,), {}), ("echo", (8,), {})])
        ids.update(many0=many[0], many2=many[2], quiet2=many[1])
        finals = {"succeeded", "failed", "cancelled"}

        async def settled() -> bool:
            done = {i for i, names in _by_task(await _events(client, "ev1:events")).items() if finals & set(names)}
            return done >= {v for k, v in ids.items() if not k.startswith("quiet")}

        await _run_worker(cfg, client, broker, settled)
        events = await _events(client, "ev1:events")
        stats = {k.decode(): v.decode() for k, v in (await client.hgetall("ev1:stats")).items()}
        await producer.aclose()
        await broker.close()
        await client.aclose()
        return events, {**{f"id:{k}": v for k, v in ids.items()}, **stats}

    events, seen = asyncio.run(scenario())
    flows = _by_task(events)
    for name in ("ok", "later", "once", "boxed", "many0", "many2"):
        assert flows[seen[f"id:{name}"]] == ["enqueued", "started", "succeeded"], name
    assert flows[seen["id:fails"]] == ["enqueued", "started", "retried", "started", "failed"]
    assert flows[seen["id:cancelled"]] == ["enqueued", "started", "cancelled"]  # taken, then dropped unstarted
    assert [e.get("error") for e in events if e["id"] == seen["id:cancelled"]][-1] == "cancelled"
    assert seen["id:quiet"] not in flows and seen["id:quiet2"] not in flows  # events: false
    for event in events:
        assert {"event", "id", "task", "queue", "attempt", "at", "stream_id"} <= set(event)
        assert abs(event["at"] - time.time() * 1000) < 60_000
    fails = [e for e in events if e["id"] == seen["id:fails"]]
    assert [e["attempt"] for e in fails] == [0, 1, 1, 2, 2]
    assert fails[2]["error"] == "ValueError: boom k-ev1" and fails[4]["error"] == "ValueError: boom k-ev1"
    assert {e["queue"] for e in events if e["id"] == seen["id:boxed"]} == {"small"}
    assert int(seen["events:enqueued"]) == 8 and int(seen["events:started"]) == 9
    assert int(seen["events:succeeded"]) == 6 and int(seen["events:retried"]) == 1
    assert int(seen["events:failed"]) == 1 and int(seen["events:cancelled"]) == 1


def test_with_events_off_nothing_is_written_and_no_push_changes(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    cfg = _config(tmp_path, redis_url, "ev2", "")

    async def scenario() -> tuple[int, bool, list[str]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        broker = Broker(client, cfg)
        await broker.publish_tables()
        producer = AsyncClient(redis_url, key_prefix="ev2")
        await producer.refresh()
        _, pushes = producer.producer.plan([("echo", (1,), {}), ("fails", ("k-ev2",), {})])
        kinds = [p.kind + ("+events" if p.events else "") for p in pushes]
        task_id = await producer.enqueue("echo", 1)
        await producer.enqueue("fails", "k-ev2")

        async def finished() -> bool:
            return bool(await client.exists(f"ev2:result:{task_id}")) and int(await client.hlen("ev2:dead")) == 1

        await _run_worker(cfg, client, broker, finished)
        exists = bool(await client.exists("ev2:events"))
        counted = [k.decode() for k in await client.hkeys("ev2:stats") if k.startswith(b"events:")]
        await producer.aclose()
        await broker.close()
        await client.aclose()
        return len(kinds), exists, [*kinds, *counted]

    count, exists, kinds = asyncio.run(scenario())
    assert count == 1 and kinds == ["lpush"]  # today's plain LPUSH, one for the queue
    assert not exists


def test_a_workflow_that_finishes_writes_workflow_finished_with_its_steps(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    cfg = _config(tmp_path, redis_url, "ev3", "events: {enabled: true}")

    async def scenario() -> list[dict[str, Any]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        await client.delete("ev3:events")
        broker = Broker(client, cfg)
        await broker.publish_tables()
        producer = AsyncClient(redis_url, key_prefix="ev3")
        ok = await producer.enqueue_workflow(canvas.chain(canvas.step("echo", 1), canvas.step("echo")))
        bad = await producer.enqueue_workflow(canvas.chain(canvas.step("fails", "k-ev3"), canvas.step("echo")))

        async def finished() -> bool:
            events = await _events(client, "ev3:events")
            return {e["id"] for e in events if e["event"] == "workflow_finished"} == {ok, bad}

        await _run_worker(cfg, client, broker, finished)
        events = await _events(client, "ev3:events")
        await producer.aclose()
        await broker.close()
        await client.aclose()
        return [{**e, "wf": "ok" if e.get("workflow") == ok else "bad"} for e in events]

    events = asyncio.run(scenario())
    ok = [(e["event"], e.get("state")) for e in events if e["wf"] == "ok"]
    assert ok == [*[("enqueued", None), ("started", None), ("succeeded", None)] * 2, ("workflow_finished", "succeeded")]
    steps = [e["id"] for e in events if e["wf"] == "ok" and e["event"] == "enqueued"]
    assert steps == [f"{events[0]['workflow']}.0", f"{events[0]['workflow']}.1"]
    bad = [e for e in events if e["wf"] == "bad"]
    assert [e["event"] for e in bad] == ["enqueued", "started", "retried", "started", "failed", "workflow_finished"]
    assert bad[-1]["state"] == "failed" and "boom k-ev3" in bad[-1]["error"]
    assert all(e["id"].startswith(e["workflow"] + ".") for e in bad[:-1])


def test_a_consumer_group_cursor_survives_a_reader_that_stopped(tmp_path: Path, redis_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        await client.delete("ev4:events")
        for n in range(5):
            await client.xadd("ev4:events", {"event": "succeeded", "id": f"t{n}", "attempt": "1", "at": "1"})
        reader = AsyncClient(redis_url, key_prefix="ev4")
        first: list[str] = []
        async for event in reader.events(group="g", consumer="c1", block_s=0.1):
            first.append(event["id"])
            if len(first) == 2:
                break  # t1 was handed out, not acknowledged: it comes again
        again: list[str] = []
        async for event in reader.events(group="g", consumer="c1", block_s=0.1):
            again.append(event["id"])
            if event["id"] == "t4":
                break
        other: list[str] = []
        await client.xadd("ev4:events", {"event": "started", "id": "t5", "attempt": "1", "at": "1"})
        async for event in reader.events(group="g", consumer="c2", block_s=0.1):
            other.append(event["id"])
            break
        await reader.aclose()
        await client.aclose()
        return first, again, other

    first, again, other = asyncio.run(scenario())
    assert first == ["t0", "t1"]
    assert again == ["t1", "t2", "t3", "t4"]
    assert other == ["t5"]  # the group's cursor: what c1 was given is not given to c2


def test_a_task_whose_lost_attempt_was_its_last_gets_its_failed_event_from_the_recovery(
    tmp_path: Path, redis_url: str
) -> None:
    cfg = _config(tmp_path, redis_url, "ev5", "events: {enabled: true}")

    async def scenario() -> tuple[tuple[int, int], list[dict[str, Any]]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        await client.delete("ev5:events")
        broker = Broker(client, cfg)
        env = envelope.Envelope("fails", "lost-1", ("k",), attempt=1)  # max_retries 1: its 2nd attempt was lost
        await client.hset("ev5:inflight:w-gone", "1", join_member("default", env.encode()))
        counts = await recover_worker(broker, "w-gone")
        events = await _events(client, "ev5:events")
        await broker.close()
        await client.aclose()
        return counts, events

    counts, events = asyncio.run(scenario())
    assert counts == (0, 1)
    assert [(e["event"], e["id"], e["attempt"]) for e in events] == [("failed", "lost-1", 2)]
    assert "died while running it" in events[0]["error"]


def test_webhooks_are_read_and_their_mistakes_are_located_errors(tmp_path: Path, redis_url: str) -> None:
    hooks = """
events: {enabled: true}
webhooks:
  billing: {url: "https://example.com/hook", secret: "x", events: [succeeded, failed], tasks: [echo], timeout: 3s}
  all: {url: "http://127.0.0.1:9/", secret: "y"}
"""
    cfg = _config(tmp_path, redis_url, "ev6", hooks)
    billing, every = cfg.webhooks
    assert billing == config_mod.WebhookConfig(
        "billing", "https://example.com/hook", "x", frozenset({"succeeded", "failed"}), frozenset({"echo"}), 3.0
    )
    assert every.events is None and every.tasks is None and every.max_attempts == 8
    assert billing.wants({"event": "failed", "task": "echo"}) and not billing.wants(
        {"event": "started", "task": "echo"}
    )
    assert not billing.wants({"event": "failed", "task": "fails"})
    bad = """
events: {enabled: true}
webhooks:
  a: {url: "ftp://example.com", secret: "x"}
  b: {url: "https://example.com", secret: "x", events: [finished]}
  c: {url: "https://example.com", secret: "x", tasks: [nope, quiet]}
"""
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, redis_url, "ev6", bad)
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "webhooks.a.url: invalid URL" in text and "must start with http:// or https://" in text, text
    assert 'webhooks.b.events[0]: must be one of "enqueued"' in text, text
    assert "unknown task 'nope'" in text and "task 'quiet' has events off" in text, text
    assert all(p.startswith(str(tmp_path)) or "task-queue.yaml:" in p for p in problems)


def test_a_schedule_fire_and_a_dead_retry_write_enqueued(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    cfg = _config(tmp_path, redis_url, "ev7", "events: {enabled: true}")

    async def scenario() -> list[tuple[str, str, str]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        await client.delete("ev7:events")
        broker = Broker(client, cfg)
        message = envelope.Envelope("echo", "nightly@1").encode()
        assert await broker.fire("nightly", "default", 1000, 2000, message, (), ("nightly@1", "echo"))
        assert not await broker.fire("nightly", "default", 1000, 2000, message, (), ("nightly@1", "echo"))
        quiet = envelope.Envelope("quiet", "quiet@1").encode()
        assert await broker.fire("hush", "default", 1000, 2000, quiet, (), ("quiet@1", "quiet"))
        record = envelope.Envelope("echo", "dead-1").encode()
        await client.hset("ev7:dead", "dead-1", b"x")
        await client.zadd("ev7:dead:index", {"dead-1": 1})
        assert await broker.revive("dead-1", "default", record, "echo")
        events = await _events(client, "ev7:events")
        await broker.close()
        await client.aclose()
        return [(e["event"], e["id"], e["queue"]) for e in events]

    assert asyncio.run(scenario()) == [("enqueued", "nightly@1", "default"), ("enqueued", "dead-1", "default")]
