"""The events stream under webhooks (issue 28.3) against a real Redis: trim_events.lua trims to about max_len
only what every webhook group has read (its pending and unread events stay), webhook_read.lua counts exactly
the events trimmed before a group read them, once; `status` shows each group's backlog; with webhooks the
writers' bound is max_backlog."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from taskqueue.config import WebhookConfig
from taskqueue.runner.webhooks import Deliveries
from taskqueue.store import eventlog, scripts
from taskqueue.store.broker import Broker
from tests.test_events import _config

STREAM, STATS = "wh:events", "wh:stats"


@pytest.fixture
def db(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _add(db: Any, count: int) -> list[bytes]:
    return [db.xadd(STREAM, {"event": "succeeded", "n": n}) for n in range(count)]


def _trim(db: Any, max_len: int, *groups: str, batch: int = 1000) -> list[int]:
    return list(db.register_script(scripts.source("trim_events"))(keys=[STREAM], args=[max_len, batch, *groups]))


def _read(db: Any, group: str, count: int) -> tuple[int, list[Any]]:
    script = db.register_script(scripts.source("webhook_read"))
    lost, entries, _last = script(keys=[STREAM, STATS], args=[group, "runner-1", count, f"webhook_lost:{group}"])
    return int(lost), list(entries)


def test_trim_keeps_what_a_webhook_has_pending_or_unread_and_trims_to_max_len_once_read(db: Any) -> None:
    db.xgroup_create(STREAM, "webhook:a", id="$", mkstream=True)
    db.xgroup_create(STREAM, "reader", id="$")  # not a webhook's: max_len applies to it as before
    ids = _add(db, 500)
    _read(db, "webhook:a", 100)  # given 100, acknowledged none yet
    assert _trim(db, 50, "webhook:a") == [0, 1]  # the oldest pending is the first entry: nothing goes
    db.xack(STREAM, "webhook:a", *ids[:60])
    assert _trim(db, 50, "webhook:a") == [60, 1]  # up to the oldest pending (ids[60]), no further
    assert db.xrange(STREAM, count=1)[0][0] == ids[60]
    db.xack(STREAM, "webhook:a", *ids[60:100])
    assert _trim(db, 50, "webhook:a") == [39, 1]  # up to the last delivered: 400 unread stay
    assert db.xlen(STREAM) == 401
    _read(db, "webhook:a", 400)
    db.xack(STREAM, "webhook:a", *ids[100:])
    assert _trim(db, 50, "webhook:a", batch=300) == [300, 0]  # at most `batch` a call
    assert _trim(db, 50, "webhook:a", batch=300) == [51, 0]
    assert db.xlen(STREAM) == 50 and _trim(db, 50, "webhook:a") == [0, 0]


def test_a_gap_is_counted_once_exactly_and_the_group_reads_on_from_the_first_kept(db: Any) -> None:
    db.xgroup_create(STREAM, "webhook:a", id="$", mkstream=True)
    ids = _add(db, 50)
    assert _read(db, "webhook:a", 10)[0] == 0
    db.xtrim(STREAM, maxlen=20, approximate=False)  # 30 go: 10 read, 20 never read
    lost, entries = _read(db, "webhook:a", 100)
    assert lost == 20 and [e[0] for e in entries] == ids[30:]
    assert _read(db, "webhook:a", 100) == (0, [])  # counted once
    more = _add(db, 10)
    db.xtrim(STREAM, maxlen=3, approximate=False)  # the group's counter is right again: a second gap counts 7
    lost, entries = _read(db, "webhook:a", 100)
    assert lost == 7 and [e[0] for e in entries] == more[7:]
    assert int(db.hget(STATS, "webhook_lost:webhook:a")) == 27
    (group,) = db.xinfo_groups(STREAM)
    assert group["entries-read"] == 60 and group["lag"] == 0


def test_no_gap_no_loss_counted(db: Any) -> None:
    db.xgroup_create(STREAM, "webhook:a", id="$", mkstream=True)
    _add(db, 30)
    _read(db, "webhook:a", 30)
    db.xtrim(STREAM, maxlen=5, approximate=False)  # only events it had read
    _add(db, 5)
    assert _read(db, "webhook:a", 100)[0] == 0 and db.hget(STATS, "webhook_lost:webhook:a") is None


def test_with_webhooks_the_writers_bound_is_max_backlog(tmp_path: Path, redis_url: str) -> None:
    plain = _config(tmp_path, redis_url, "wb0", "events: {enabled: true, max_len: 500}")
    assert plain.events_cap == 500
    hook = 'webhooks: {ops: {url: "http://127.0.0.1:9/", secret: "s"}}'
    hooked = _config(tmp_path, redis_url, "wb1", f"events: {{enabled: true, max_len: 500}}\n{hook}")
    assert hooked.events_cap == 1000000
    small = _config(tmp_path, redis_url, "wb2", f"events: {{enabled: true, max_len: 500, max_backlog: 10}}\n{hook}")
    assert small.events_cap == 500  # never below max_len


def test_status_backlog_of_a_group_is_its_pending_and_unread_events(redis_url: str, db: Any) -> None:
    db.xgroup_create(STREAM, "webhook:a", id="$", mkstream=True)
    ids = _add(db, 500)
    _read(db, "webhook:a", 100)
    db.xack(STREAM, "webhook:a", *ids[:30])

    async def backlogs() -> dict[str, int | None]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await eventlog.backlogs(client, STREAM)
        finally:
            await client.aclose()

    assert asyncio.run(backlogs()) == {"webhook:a": 470}
    db.delete(STREAM)
    assert asyncio.run(backlogs()) == {}


class _Eager(Deliveries):
    def claim_after_s(self, hook: WebhookConfig) -> float:
        return 0.0  # take over at once what a runner that died had pending


def test_pending_events_trimmed_before_a_dead_runner_delivered_them_are_counted_lost(
    tmp_path: Path, redis_url: str, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hook_yaml = 'webhooks: {ops: {url: "http://127.0.0.1:9/", secret: "s"}}'
    cfg = _config(tmp_path, redis_url, "wb3", f"events: {{enabled: true}}\n{hook_yaml}")
    stream = "wb3:events"
    db.xgroup_create(stream, "webhook:ops", id="$", mkstream=True)
    ids = [db.xadd(stream, {"event": "succeeded", "n": n}) for n in range(10)]
    db.xreadgroup("webhook:ops", "runner-that-died", {stream: ">"}, count=4)  # then it died
    db.xtrim(stream, minid=ids[6], approximate=False)  # its 4 pending go, and 2 it never read

    async def scenario() -> tuple[int, list[Any]]:
        client: Any = aioredis.Redis.from_url(redis_url)
        try:
            deliveries = _Eager(Broker(client, cfg), cfg, "runner-2")
            (hook,) = cfg.webhooks
            claimed = await deliveries._claim(hook, stream, "webhook:ops")
            read, _last = await deliveries._read(hook, stream, "webhook:ops")
            return len(claimed), read
        finally:
            await client.aclose()

    with caplog.at_level("ERROR", logger="taskqueue.webhooks"):
        claimed, read = asyncio.run(scenario())
    assert claimed == 0 and [stream_id for stream_id, _ in read] == ids[6:]
    assert int(db.hget("wb3:stats", "webhook_lost:ops")) == 4 + 2
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "webhook 'ops' lost 4 event(s)",
        "webhook 'ops' lost 2 event(s)",
    ]
