"""The HTTP app in-process (aiohttp's TestServer) against a real Redis: auth, validation, /health, /metrics,
the JSON API and the dashboard page. The runner is a plain stand-in holding what web.py reads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from taskqueue import config as config_mod
from taskqueue.canvas import chain, step
from taskqueue.config import Config
from taskqueue.ops import metrics
from taskqueue.ops.web import create_app
from taskqueue.ops.web import start as web_start
from taskqueue.store import redisboot, stats
from taskqueue.store.broker import FAILURES_KEPT, HOST, Broker, DeadRecord, FailureRecord
from taskqueue.store.connection import async_client
from taskqueue.worker.worker import lease_s
from tests.conftest import REPO, free_port

TOKEN = "s3cret-token"
Http = TestClient[web.Request, web.Application]
Scenario = Callable[[Http, Broker], Awaitable[None]]


@dataclass
class RunnerStandIn:
    """What web.py reads of the runner (no Redis behaviour is faked: the broker is real)."""

    config: Config
    broker: Broker
    workers: Mapping[str, object] = field(default_factory=lambda: {"w-local": object()})
    last_tick: float | None = field(default_factory=time.time)


def make_config(tmp_path: Path, redis_url: str, http: str = f"{{auth_token: {TOKEN}}}") -> Config:
    path = tmp_path / "task-queue.yaml"
    path.write_text(
        f'redis: {{url: "{redis_url}"}}\n'
        "queues:\n"
        "  high_priority: {priority: 10}\n"
        "  default: {priority: 5}\n"
        "  low_priority: {priority: 1, max_length: 2}\n"
        "tasks:\n"
        "  send: {path: jobs.x:send}\n"
        "  slow: {path: jobs.x:slow, queue: low_priority}\n"
        "workers: {initial_count: 1}\n"
        f"http: {http}\n"
        "limits: {max_payload_size: 2KiB}\n"
    )
    return config_mod.load(path, import_tasks=False)


def serve(config: Config, scenario: Scenario, **state: Any) -> None:
    """Run `scenario` against the app of a runner with `config` (its own Redis connection)."""

    async def main() -> None:
        client = async_client(redisboot.options(config))
        broker = Broker(client, config)
        try:
            async with TestClient(TestServer(create_app(RunnerStandIn(config, broker, **state)))) as http:
                await scenario(http, broker)
        finally:
            await client.aclose()

    asyncio.run(main())


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def bury(broker: Broker, task_id: str, queue: str = "default") -> None:
    """Dead-letter a message through the broker's own script (as a worker does)."""
    message = msgpack.packb({"id": task_id, "task": "send", "kwargs": {"to": "x"}, "attempt": 3})
    record = DeadRecord(
        task_id, "send", queue, message, False, "ValueError: boom", "Traceback…", 3, None, time.time(), "w"
    )
    assert await broker.bury("w", None, record, [stats.field("dead", queue, "send")])


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert "Traceback" not in body["error"]
    return str(body["error"])


@pytest.fixture
def cfg(tmp_path: Path, redis_url: str) -> Config:
    return make_config(tmp_path, redis_url)


def test_every_state_changing_route_needs_the_token(cfg: Config) -> None:
    routes = [
        ("POST", "/tasks/enqueue", {"task": "send"}),
        ("POST", "/tasks/dead/d1/retry", None),
        ("DELETE", "/tasks/dead/d2", None),
    ]

    async def scenario(http: Http, broker: Broker) -> None:
        await bury(broker, "d1")
        await bury(broker, "d2")
        for method, path, body in routes:
            for headers in ({}, auth("wrong"), {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
                response = await http.request(method, path, json=body, headers=headers)
                assert "bearer token" in await error_of(response, 401), (method, path, headers)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await broker.queue_depths() == {"high_priority": 0, "default": 0, "low_priority": 0}
        assert sorted(await broker.dead_ids()) == ["d1", "d2"]  # nothing changed without the token

        other_site = {
            **auth(),
            "Origin": "https://ci.example.org",
        }  # a bearer token is never sent by a browser on its own
        response = await http.post("/tasks/enqueue", json={"task": "send", "kwargs": {"to": "a"}}, headers=other_site)
        assert response.status == 201
        created = await response.json()
        response = await http.post("/tasks/dead/d1/retry", headers=auth())
        assert (response.status, await response.json()) == (200, {"retried": "d1"})
        response = await http.delete("/tasks/dead/d2", headers=auth())
        assert (response.status, await response.json()) == (200, {"deleted": "d2"})

        queued = await broker.redis.lrange(broker.keys.queue("default"), 0, -1)
        ids = {msgpack.unpackb(m)["id"] for m in queued}
        assert ids == {created["id"], "d1"}
        assert msgpack.unpackb(queued[0]).get("attempt", 0) == 0  # a retried dead task starts afresh
        assert (await broker.stats()).get("enqueued:default:send") == 1  # counted for taskqueue_runner_enqueued
        assert await broker.dead_ids() == []
        assert "not in the dead-letter store" in await error_of(
            await http.delete("/tasks/dead/d2", headers=auth()), 404
        )
        await error_of(await http.post("/tasks/dead/nope/retry", headers=auth()), 404)

    serve(cfg, scenario)


def test_without_a_token_writes_are_open_but_not_to_other_sites(tmp_path: Path, redis_url: str) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        assert (await http.post("/tasks/enqueue", json={"task": "send"})).status == 201
        own_origin = {"Origin": f"http://{http.host}:{http.port}"}
        assert (await http.post("/tasks/enqueue", json={"task": "send"}, headers=own_origin)).status == 201
        for evil in ("https://evil.example", "http://[bad", "null"):
            response = await http.post("/tasks/enqueue", json={"task": "send"}, headers={"Origin": evil})
            assert "cross-origin" in await error_of(response, 403), evil
        response = await http.request("PROPFIND", "/tasks/enqueue")
        assert response.status == 405
        proxied = {"Origin": "https://tq.example.org", "X-Forwarded-Host": "tq.example.org"}
        assert (await http.post("/tasks/enqueue", json={"task": "send"}, headers=proxied)).status == 201
        assert (await broker.queue_depths())["default"] == 3
        text = await (await http.get("/metrics")).text()  # an odd method is "other", not a new label value
        assert 'taskqueue_http_requests_total{method="other",route="unmatched",status="405"} 1.0' in text

    serve(make_config(tmp_path, redis_url, http="{}"), scenario)


def test_a_dns_rebinding_page_is_refused_by_its_host_name(tmp_path: Path, redis_url: str) -> None:
    """A page on evil.example that re-points its name at 127.0.0.1 is same-origin for the browser; the Host
    header still names evil.example, and is refused on every route, reads included. IP addresses,
    localhost and http.allowed_hosts are served."""

    async def scenario(http: Http, broker: Broker) -> None:
        await bury(broker, "d1")
        evil = {"Host": "evil.example", "Origin": "http://evil.example"}
        for method, path in (("POST", "/tasks/enqueue"), ("GET", "/tasks/dead"), ("GET", "/"), ("GET", "/metrics")):
            response = await http.request(method, path, json={"task": "send"}, headers=evil)
            assert "http.allowed_hosts" in await error_of(response, 403), (method, path)
        assert (await broker.queue_depths())["default"] == 0
        for host in (f"127.0.0.1:{http.port}", "localhost", f"localhost:{http.port}", "[::1]:8080", "TQ.Internal"):
            assert (await http.get("/tasks/dead", headers={"Host": host})).status == 200, host
        assert (await http.post("/tasks/enqueue", json={"task": "send"}, headers={"Host": "tq.internal"})).status == 201

    serve(make_config(tmp_path, redis_url, http="{allowed_hosts: [tq.internal]}"), scenario)


def test_a_workflow_is_shown_by_id(cfg: Config) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        workflow_id, push = broker.producer.workflow(chain(step("send", to="a"), step("slow")))
        await broker.send([push])
        response = await http.get(f"/tasks/workflows/{workflow_id}")
        assert response.status == 200
        body = await response.json()
        assert (body["id"], body["state"]) == (workflow_id, "running")
        assert [(s["task"], s["state"]) for s in body["steps"]] == [("send", "queued"), ("slow", "pending")]
        assert "no workflow wf-nope" in await error_of(await http.get("/tasks/workflows/wf-nope"), 404)
        assert (await broker.queue_depths())["default"] == 1  # only the first step waits in its queue

    serve(cfg, scenario)


def test_enqueue_validates_the_body(cfg: Config) -> None:
    bad = [
        (b"{not json", 400, "must be JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"task": "nope"}', 400, "unknown task 'nope' (declared: send, slow)"),
        (b'{"task": "send", "priority": 3}', 400, "unknown field(s) priority"),
        (b'{"task": "send", "args": {"a": 1}}', 400, "'args' must be an array"),
        (b'{"task": "send", "kwargs": [1]}', 400, "'kwargs' must be an object"),
        (b'{"task": "send", "queue": "hihg"}', 400, "unknown queue 'hihg'"),
        (b'{"task": "send", "delay": -1}', 400, "'delay'"),
        (b'{"task": "send", "delay": "soon"}', 400, "'delay'"),
        (b'{"task": "send", "delay": Infinity}', 400, "'delay'"),
        (b'{"task": "send", "delay": 1e300}', 400, "limits.max_delay"),
        (b'{"task": "send", "args": [18446744073709551616]}', 400, "MessagePack"),
        (json.dumps({"task": "send", "args": ["x" * 3000]}).encode(), 413, "max_payload_size"),
        (json.dumps({"task": "send", "args": ["x" * 2000]}).encode(), 413, "max_payload_size"),
    ]

    async def scenario(http: Http, broker: Broker) -> None:
        for body, status, message in bad:
            response = await http.post("/tasks/enqueue", data=body, headers=auth())
            assert message in await error_of(response, status), body[:60]
        assert await broker.queue_depths() == {"high_priority": 0, "default": 0, "low_priority": 0}

        later = await http.post("/tasks/enqueue", json={"task": "send", "delay": "1m"}, headers=auth())
        assert later.status == 201
        assert await broker.delayed_count() == 1
        routed = await http.post("/tasks/enqueue", json={"task": "slow", "args": [1]}, headers=auth())
        assert (await routed.json())["queue"] == "low_priority"  # the task's own queue
        moved = await http.post("/tasks/enqueue", json={"task": "slow", "queue": "high_priority"}, headers=auth())
        assert (await moved.json())["queue"] == "high_priority"
        await http.post("/tasks/enqueue", json={"task": "slow"}, headers=auth())
        assert "is full" in await error_of(
            await http.post("/tasks/enqueue", json={"task": "slow"}, headers=auth()), 429
        )
        assert await broker.queue_depths() == {"high_priority": 1, "default": 0, "low_priority": 2}

    serve(cfg, scenario)


def test_prometheus_metrics_from_redis_counters(cfg: Config) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        fields: dict[str, int] = {
            stats.field("processed", "default", "send"): 5,
            stats.field("failed", "default", "send"): 2,
        }
        for seconds in (0.003, 0.004, 0.3):  # two in the first bucket, one in le=0.5
            bucket, total, micros = stats.duration_fields("default", "send", seconds)
            fields[bucket] = fields.get(bucket, 0) + 1
            fields[total] = fields.get(total, 0) + micros
        await broker.redis.hset(broker.keys.stats, mapping=fields)
        old = {"task": "send", "id": "old", "enqueued_at": time.time() - 60}
        await broker.redis.lpush(broker.keys.queue("default"), json.dumps(old), b'{"task": "send"}')
        await broker.heartbeat("w1", {"slots": 10, "active": 3}, 5.0)
        await broker.heartbeat("w2", {"slots": 10, "active": 1}, 5.0)
        await bury(broker, "d1")

        response = await http.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

        def sample(name: str, **labels: str) -> float:
            return value[(name, tuple(sorted(labels.items())))]

        assert families["taskqueue_tasks_processed"].type == "counter"
        assert sample("taskqueue_tasks_processed_total", queue="default", task="send") == 5
        assert sample("taskqueue_tasks_failed_total", queue="default", task="send") == 2
        assert sample("taskqueue_tasks_processed_total", queue="low_priority", task="slow") == 0  # declared: 0
        assert sample("taskqueue_tasks_dead_total", queue="default", task="send") == 1
        assert sample("taskqueue_queue_pending", queue="default") == 2
        assert 59 < sample("taskqueue_queue_oldest_task_age_seconds", queue="default") < 70
        assert sample("taskqueue_queue_oldest_task_age_seconds", queue="high_priority") == 0
        assert sample("taskqueue_dead_tasks") == 1
        assert sample("taskqueue_queue_delayed") == 0
        assert sample("taskqueue_workers") == 2
        assert sample("taskqueue_active_tasks") == 4
        assert sample("taskqueue_redis_up") == 1
        histogram = {"queue": "default", "task": "send"}
        assert families["taskqueue_task_duration_seconds"].type == "histogram"
        assert sample("taskqueue_task_duration_seconds_bucket", le="0.005", **histogram) == 2  # cumulative
        assert sample("taskqueue_task_duration_seconds_bucket", le="0.25", **histogram) == 2
        assert sample("taskqueue_task_duration_seconds_bucket", le="0.5", **histogram) == 3
        assert sample("taskqueue_task_duration_seconds_bucket", le="+Inf", **histogram) == 3
        assert sample("taskqueue_task_duration_seconds_count", **histogram) == 3
        assert sample("taskqueue_task_duration_seconds_sum", **histogram) == pytest.approx(0.307)
        assert not families["taskqueue_http_requests"].samples  # this scrape is counted once it is answered
        again = await (await http.get("/metrics")).text()
        assert 'taskqueue_http_requests_total{method="GET",route="/metrics",status="200"} 1.0' in again

    serve(cfg, scenario)


def test_health_reports_components(cfg: Config) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        info = {"host": HOST, "slots": 10, "active": 0}
        await broker.heartbeat("w-local", info, lease_s(cfg))  # as the worker does
        response = await http.get("/health")
        body = await response.json()
        assert (response.status, body["status"]) == (200, "healthy"), body
        redis, workers, scheduler = (body["components"][c] for c in ("redis", "workers", "scheduler"))
        assert redis["status"] == "healthy"
        assert redis["latency_ms"] < 1000
        assert redis["version"].count(".") == 2
        assert redis["maxmemory_policy"] == "noeviction"
        assert isinstance(redis["used_memory"], int)
        assert redis["persistence"]["aof_enabled"] is False
        assert workers | {"heartbeat_age_s": 0} == {
            "status": "healthy",
            "message": None,
            "live": 1,
            "expected": 1,
            "host": HOST,
            "cluster_live": 1,
            "hosts": {HOST: 1},
            "heartbeat_age_s": 0,
        }
        assert 0 <= workers["heartbeat_age_s"] < 1
        assert scheduler["status"] == "healthy"

    serve(cfg, scenario)


def test_health_without_workers_or_timer(cfg: Config) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        response = await http.get("/health")
        body = await response.json()
        assert (response.status, body["status"]) == (503, "unhealthy")
        assert body["components"]["workers"]["message"] == "no worker process is running"
        assert body["components"]["scheduler"] == {
            "status": "degraded",
            "enabled": True,
            "message": "no tick yet",
            "last_tick_age_s": None,
        }

    serve(cfg, scenario, workers={}, last_tick=None)


def test_redis_down_is_unhealthy_fast_and_metrics_say_so(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")

    async def scenario(http: Http, broker: Broker) -> None:
        started = time.monotonic()
        response = await http.get("/health")
        body = await response.json()
        assert (response.status, body["status"]) == (503, "unhealthy")
        assert body["components"]["redis"]["message"].startswith("Redis does not answer")
        assert time.monotonic() - started < 3
        metrics = await http.get("/metrics")
        assert metrics.status == 200
        assert "taskqueue_redis_up 0.0" in await metrics.text()
        assert "Redis is unavailable" in await error_of(await http.get("/tasks/queues"), 503)
        assert "Redis is unavailable" in await error_of(
            await http.post("/tasks/enqueue", json={"task": "send"}, headers=auth()), 503
        )

    serve(cfg, scenario)


def test_json_api(cfg: Config) -> None:
    async def scenario(http: Http, broker: Broker) -> None:
        await broker.heartbeat("w-local", {"host": "h", "slots": 10, "active": 2}, 5.0)
        await broker.heartbeat("w-elsewhere", {"host": "h2", "slots": 10, "active": 0}, 5.0)
        for n in range(3):
            await http.post("/tasks/enqueue", json={"task": "send", "args": [n]}, headers=auth())
        await broker.redis.hset(broker.keys.stats, stats.field("processed", "default", "send"), 7)
        await bury(broker, "d1")
        await bury(broker, "d2", queue="low_priority")

        metrics = await (await http.get("/tasks/metrics")).json()
        assert metrics == {
            "active_workers": 2,
            "tasks_per_worker": 1.5,
            "total_pending_tasks": 3,
            "delayed_tasks": 0,
            "dead_tasks": 2,
            "queue_metrics": [
                {"queue_name": "high_priority", "pending_tasks": 0, "processed_tasks": 0, "failed_tasks": 0},
                {"queue_name": "default", "pending_tasks": 3, "processed_tasks": 7, "failed_tasks": 0},
                {"queue_name": "low_priority", "pending_tasks": 0, "processed_tasks": 0, "failed_tasks": 0},
            ],
        }
        queues = await (await http.get("/tasks/queues")).json()
        default = next(q for q in queues["queues"] if q["name"] == "default")
        assert default["pending"] == 3 and default["priority"] == 5 and 0 <= default["oldest_age_s"] < 5
        workers = await (await http.get("/tasks/workers")).json()
        assert {w["id"]: w["local"] for w in workers["workers"]} == {"w-local": True, "w-elsewhere": False}
        assert (workers["local"], workers["expected"]) == (1, 1)
        dead = await (await http.get("/tasks/dead?limit=1")).json()
        assert dead["total"] == 2 and [d["id"] for d in dead["dead"]] == ["d2"]  # newest first
        assert dead["dead"][0]["error"] == "ValueError: boom" and dead["dead"][0]["queue"] == "low_priority"
        for limit in ("0", "x", "501", "-1"):
            assert "limit" in await error_of(await http.get(f"/tasks/dead?limit={limit}"), 400)
        await error_of(await http.get("/tasks/nothing-here"), 404)
        response = await http.put("/tasks/enqueue", headers=auth())
        await error_of(response, 405)
        assert "POST" in response.headers["Allow"]

    serve(cfg, scenario)


def test_workers_show_in_flight_now_and_every_local_process(cfg: Config) -> None:
    """The table's rows are what its header counts: live workers of every runner and each of this runner's
    processes, registered or not; `in_flight` is the in-flight hash now, not the heartbeat's `active`."""

    async def scenario(http: Http, broker: Broker) -> None:
        await broker.heartbeat("w-local", {"host": "h", "slots": 10, "active": 0}, 5.0)
        await broker.heartbeat("w-elsewhere", {"host": "h2", "slots": 4, "active": 0}, 5.0)
        await broker.heartbeat("w-gone", {"host": "h3", "slots": 4, "active": 0}, -1.0)  # its lease ran out
        held = {f"t{n}": f"default|m{n}" for n in range(7)}
        await broker.redis.hset(broker.keys.inflight("w-local"), mapping=held)
        await broker.redis.hset(broker.keys.inflight("w-elsewhere"), mapping={"t": "default|m"})
        body = await (await http.get("/tasks/workers")).json()
        rows = {w["id"]: (w["status"], w["local"], w["in_flight"], w.get("active")) for w in body["workers"]}
        assert rows == {
            "w-local": ("live", True, 7, "0"),
            "w-starting": ("starting", True, 0, None),
            "w-elsewhere": ("live", False, 1, "0"),
        }
        assert [w["id"] for w in body["workers"]][-1] == "w-elsewhere"  # this runner's first
        counts = {k: body[k] for k in ("live", "local", "local_live", "expected", "in_flight")}
        assert counts == {"live": 2, "local": 2, "local_live": 1, "expected": 1, "in_flight": 8}
        assert abs(body["read_at"] - time.time()) < 5

    serve(cfg, scenario, workers={"w-local": object(), "w-starting": object()})


def test_recent_failures_keep_retried_and_dead_lettered_attempts(cfg: Config) -> None:
    """A retry that counts as a failure and every burial land in {p}:failures, newest first and capped; a
    held-back retry (no failure record) does not."""

    async def scenario(http: Http, broker: Broker) -> None:
        async def retry(token: str, failure: FailureRecord | None) -> None:
            await broker.redis.hset(broker.keys.inflight("w"), token, "default|m")
            push = broker.producer.later("default", [b"m"], 1.5)
            assert await broker.retry("w", token.encode(), push, [], [], failure)

        await retry("held-back", None)
        await retry("r1", FailureRecord("t1", "send", "default", 1, "ValueError: once", time.time(), 1.5, "w"))
        await bury(broker, "d1")
        body = await (await http.get("/tasks/failures")).json()
        assert body["kept"] == FAILURES_KEPT
        shown = [(f["id"], f["attempt"], f["will_retry"], f["retry_in"], f["error"]) for f in body["failures"]]
        assert shown == [("d1", 3, False, None, "ValueError: boom"), ("t1", 1, True, 1.5, "ValueError: once")]
        for n in range(FAILURES_KEPT + 5):
            await retry(f"r{n}", FailureRecord(f"x{n}", "send", "default", 1, "E" * 2000, time.time(), 0.0, "w"))
        assert await broker.redis.llen(broker.keys.failures) == FAILURES_KEPT
        newest = (await (await http.get("/tasks/failures?limit=1")).json())["failures"]
        assert [f["id"] for f in newest] == [f"x{FAILURES_KEPT + 4}"] and len(newest[0]["error"]) == 500
        for limit in ("0", "x", str(FAILURES_KEPT + 1)):
            assert "limit" in await error_of(await http.get(f"/tasks/failures?limit={limit}"), 400)

    serve(cfg, scenario)


def test_dashboard_page_allows_only_its_own_inline_code(tmp_path: Path, redis_url: str) -> None:
    cfg = make_config(tmp_path, redis_url, http="{route_prefix: /api/v1/, enable_health_check: false}")

    async def scenario(http: Http, broker: Broker) -> None:
        response = await http.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = await response.text()
        assert '<meta name="tq-api" content="/api/v1">' in page
        assert '<meta name="tq-health" content="0">' in page
        assert "http://" not in page and "https://" not in page  # nothing from a CDN
        script = re.search(r"<script>(.*?)</script>", page, re.DOTALL)
        assert script is not None
        digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
        csp = response.headers["Content-Security-Policy"]
        assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
        assert (await http.get("/api/v1/queues")).status == 200
        assert (await http.get("/health")).status == 404

    serve(cfg, scenario)


def test_example_dashboards_name_only_exported_metrics(cfg: Config) -> None:
    """conf/grafana-dashboard.json and conf/prometheus-rules.yml query metrics that /metrics really has."""
    snapshot = metrics.Snapshot(True, {"default": 1}, {"default": 2.0}, 0, 0, {"autoscaler_up": 1}, ({"slots": "1"},))
    exported = {f.name for f in text_string_to_metric_families(metrics.Metrics(cfg).render(snapshot).decode())}
    exported |= {f"{name}_total" for name in exported} | {f"{name}_bucket" for name in exported}
    queried = set()
    for path in (REPO / "conf" / "grafana-dashboard.json", REPO / "conf" / "prometheus-rules.yml"):
        queried |= set(re.findall(r"\btaskqueue_[a-z_]+", path.read_text()))
    assert len(queried) >= 12
    assert queried <= exported, queried - exported


@pytest.mark.parametrize("request_sent", ["unfinished-headers", "dripped-headers", "idle-after-a-response"])
def test_a_connection_without_a_whole_request_is_closed_at_the_idle_timeout(
    tmp_path: Path, redis_url: str, request_sent: str
) -> None:
    """Slowloris: headers that never finish (sent at once, or a byte at a time) do not hold a connection open;
    nor does a kept-alive connection that sends nothing after its response."""
    port, idle_s = free_port(), 1.0
    config = make_config(tmp_path, redis_url, http=f"{{host: 127.0.0.1, port: {port}}}")

    async def drip(writer: asyncio.StreamWriter) -> None:
        for byte in b"X-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)  # the pace of the attack, not a wait for the server

    async def main() -> float:
        client = async_client(redisboot.options(config))
        stop = await web_start(RunnerStandIn(config, Broker(client, config)), idle_timeout_s=idle_s)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened = time.monotonic()
            dripping = None
            if request_sent == "idle-after-a-response":
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
                await reader.readexactly(length)
                opened = time.monotonic()
            else:
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                if request_sent == "dripped-headers":
                    dripping = asyncio.create_task(drip(writer))
            assert await asyncio.wait_for(reader.read(), timeout=idle_s + 10) == b""  # closed, nothing answered
            closed_after = time.monotonic() - opened
            if dripping:
                dripping.cancel()
            writer.close()
            return closed_after
        finally:
            await stop()
            await client.aclose()

    closed_after = asyncio.run(main())
    assert idle_s * 0.9 <= closed_after < idle_s + 5
