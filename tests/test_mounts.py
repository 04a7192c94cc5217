"""One implementation of each route behind three servers: the runner's own (aiohttp), the ASGI app mounted in
a real FastAPI app served by uvicorn, and `add_routes` in a real aiohttp app — each over real HTTP against a
real Redis. The same requests get the same answers from all three: the token rule, the Host check, the body
size limits, the router's 404/405, the JSON API and its errors. (tests/e2e/test_mounts.py runs tasks.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from taskqueue import config as config_mod
from taskqueue.integrations import aiohttp as aiohttp_mount
from taskqueue.integrations import asgi
from taskqueue.ops import web as runner_web
from taskqueue.store import redisboot
from taskqueue.store.broker import Broker
from taskqueue.store.connection import async_client
from taskqueue.worker.worker import lease_s
from tests.conftest import free_port
from tests.otel import exporter
from tests.servers import call, call_json, serve_aiohttp, serve_asgi
from tests.test_web import TOKEN, RunnerStandIn, auth, bury

BACKENDS = ("runner", "asgi", "aiohttp")
Served = Callable[[Path], AbstractContextManager[str]]  # config file → the URL the API answers at


def write_config(folder: Path, redis_url: str, prefix: str, http: str = f"{{auth_token: {TOKEN}}}") -> Path:
    path = folder / f"{prefix}.yaml"
    path.write_text(
        f'redis: {{url: "{redis_url}", key_prefix: {prefix}}}\n'
        "tasks:\n"
        "  send: {path: jobs.x:send}\n"
        "  slow: {path: jobs.x:slow, queue: low_priority}\n"
        f"http: {http}\n"
        "limits: {max_payload_size: 2KiB}\n"
    )
    return path


def fastapi_app(config: Path) -> FastAPI:
    """A user's FastAPI app with the deployment's API mounted at /tq (closed by the app's own lifespan)."""
    tq = asgi.create_app(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        await tq.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    def home() -> dict[str, str]:
        return {"app": "the user's own"}

    app.mount("/tq", tq)
    return app


def aiohttp_app(config: Path) -> web.Application:
    async def home(_: web.Request) -> web.Response:
        return web.json_response({"app": "the user's own"})

    app = web.Application()
    app.router.add_get("/", home)
    aiohttp_mount.add_routes(app, config, prefix="/tq")
    return app


def runner_app(config: Path) -> web.Application:
    broker = broker_of(config)
    app = runner_web.create_app(RunnerStandIn(broker.config, broker))

    async def close(_: web.Application) -> None:
        await broker.redis.aclose()

    app.on_cleanup.append(close)
    return app


@contextlib.contextmanager
def served(backend: str, config: Path) -> Iterator[str]:
    """The API of `config` behind `backend`; yields the URL it answers at (its mount point)."""
    if backend == "asgi":
        with serve_asgi(fastapi_app(config)) as url:
            assert call_json(url + "/") == (200, {"app": "the user's own"})  # the host app still serves its own
            yield url + "/tq"
    elif backend == "aiohttp":
        with serve_aiohttp(lambda: aiohttp_app(config)) as url:
            assert call_json(url + "/") == (200, {"app": "the user's own"})
            yield url + "/tq"
    else:
        with serve_aiohttp(lambda: runner_app(config)) as url:
            yield url


def broker_of(config: Path) -> Broker:
    cfg = config_mod.load(config, import_tasks=False)
    return Broker(async_client(redisboot.options(cfg)), cfg)


def on(config: Path, work: Callable[[Broker], Any]) -> Any:
    """Run `await work(broker)` with a broker of its own (the test's, not the server's)."""

    async def main() -> Any:
        broker = broker_of(config)
        try:
            return await work(broker)
        finally:
            await broker.redis.aclose()

    return asyncio.run(main())


def transcript(base: str, config: Path) -> list[tuple[Any, ...]]:
    """The same requests against any of the three: what each answered (ids replaced by placeholders)."""
    seen: list[tuple[Any, ...]] = []
    on(config, lambda broker: broker.publish_tables())  # as a runner does at start: status looks in its queues

    def note(label: str, method: str, path: str, body: Any = None, headers: Any = None, raw: Any = None) -> Any:
        status, got_headers, found = call(base + path, method, body, headers, raw)
        text = found.decode()
        shown = {k: got_headers.get(k) for k in ("www-authenticate", "allow", "x-content-type-options")}
        kind = got_headers.get("content-type", "").split(";")[0]
        parsed = json.loads(text) if kind == "application/json" and text else None
        seen.append((label, status, kind, _placeholders(text) if parsed else len(found), shown))
        return parsed

    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    note("rebinding read", "GET", "/tasks/dead", headers=evil)
    note("rebinding write", "POST", "/tasks/enqueue", {"task": "send"}, {**evil, **auth()})
    note("allowed host", "GET", "/tasks/queues", headers={"Host": "tq.internal"})
    note("no token", "POST", "/tasks/enqueue", {"task": "send"})
    note("wrong token", "POST", "/tasks/enqueue", {"task": "send"}, auth("wrong"))
    note("basic", "POST", "/tasks/enqueue", {"task": "send"}, {"Authorization": f"Basic {TOKEN}"})
    created = note("enqueue", "POST", "/tasks/enqueue", {"task": "send", "kwargs": {"to": "a"}}, auth())
    note("token from another site", "POST", "/tasks/enqueue", {"task": "send"}, {**auth(), "Origin": "https://x.org"})
    note("too large", "POST", "/tasks/enqueue", {"task": "send", "args": ["x" * 3000]}, auth())
    chunked = iter([b'{"task": "send", "args": ["', b"x" * 3000, b'"]}'])  # no Content-Length: chunked
    note(
        "too large, chunked",
        "POST",
        "/tasks/enqueue",
        headers={**auth(), "Content-Type": "application/json"},
        raw=chunked,
    )
    note("message too large", "POST", "/tasks/enqueue", {"task": "send", "args": ["x" * 2000]}, auth())
    note("not JSON", "POST", "/tasks/enqueue", headers=auth(), raw=b"{not json")
    note("unknown task", "POST", "/tasks/enqueue", {"task": "nope"}, auth())
    note("delay", "POST", "/tasks/enqueue", {"task": "send", "delay": 1e300}, auth())
    note("routed", "POST", "/tasks/enqueue", {"task": "slow"}, auth())
    note("wrong method", "PUT", "/tasks/enqueue", headers=auth())
    note("odd method", "PROPFIND", "/tasks/enqueue")
    note("no route", "GET", "/tasks/nothing-here")
    note("status", "GET", f"/tasks/task/{created['id']}")
    note("cancel without token", "POST", f"/tasks/cancel/{created['id']}")
    note("cancel", "POST", f"/tasks/cancel/{created['id']}", headers=auth())
    note("status after cancel", "GET", f"/tasks/task/{created['id']}")
    on(config, lambda broker: bury(broker, "d1"))
    note("dead list", "GET", "/tasks/dead?limit=5")
    note("dead limit", "GET", "/tasks/dead?limit=0")
    note("dead retry without token", "POST", "/tasks/dead/d1/retry")
    note("dead retry", "POST", "/tasks/dead/d1/retry", headers=auth())
    note("dead delete of a revived task", "DELETE", "/tasks/dead/d1", headers=auth())
    note("queues", "HEAD", "/tasks/queues")
    note("queue metrics", "GET", "/tasks/metrics")
    note("workflow", "GET", "/tasks/workflows/wf-nope")
    note("workflows", "GET", "/tasks/workflows?limit=3")
    note("live", "GET", "/health/live")
    note("ready", "GET", "/health/ready")
    note("load", "GET", "/tasks/load")
    return seen


def _placeholders(text: str) -> str:
    """Ids and times differ from run to run, and so does a message's size: its id's length, and its `trace`
    when the test process has a tracer provider (FastAPI traces its own requests then: tests/otel.py)."""
    text = re.sub(r"message of \d+ bytes", "message of <n> bytes", text)
    return re.sub(r"\b1\d{9}(\.\d+)?", "<time>", re.sub(r"[0-9a-f]{16,}", "<id>", text))


def test_every_route_answers_alike_behind_the_runner_fastapi_and_aiohttp(tmp_path: Path, redis_url: str) -> None:
    answers = {}
    for backend in BACKENDS:
        config = write_config(
            tmp_path, redis_url, f"tq{backend}", http=f"{{auth_token: {TOKEN}, allowed_hosts: [tq.internal]}}"
        )
        with served(backend, config) as base:
            answers[backend] = transcript(base, config)
            status, headers, page = call(base + "/")
            assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
            root = "" if backend == "runner" else "/tq"
            assert f'<meta name="tq-api" content="{root}/tasks">' in page.decode()
            assert f'<meta name="tq-root" content="{root}">' in page.decode()
            assert "script-src 'sha256-" in headers["content-security-policy"]
            status, headers, text = call(base + "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
            families = {f.name: f for f in text_string_to_metric_families(text.decode())}
            counted = {
                (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for s in families["taskqueue_http_requests"].samples
            }
            assert counted[("POST", "/tasks/enqueue", "401")] == 3
            assert counted[("other", "unmatched", "405")] == 1
            assert counted[("POST", "/tasks/cancel/{id}", "200")] == 1
        queued = on(config, lambda broker: broker.queue_depths())
        assert queued == {"high_priority": 0, "default": 3, "low_priority": 1}, backend  # 2 enqueued + d1 revived
    by_label = {backend: {entry[0]: entry[1:] for entry in answers[backend]} for backend in BACKENDS}
    assert by_label["runner"]["enqueue"][0] == 201
    assert by_label["runner"]["rebinding read"][0] == 403
    assert by_label["runner"]["too large, chunked"][0] == 413
    assert by_label["runner"]["cancel"][0] == 200
    assert by_label["runner"]["dead retry"][0] == 200
    assert by_label["runner"]["live"][0] == by_label["runner"]["ready"][0] == 200
    assert json.loads(by_label["runner"]["load"][2])["work"] == 4  # queued: 2 enqueued, d1 revived, 1 routed
    for backend in ("asgi", "aiohttp"):
        for label, answer in by_label["runner"].items():
            assert by_label[backend][label] == answer, (backend, label)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_a_token_other_sites_cannot_change_state(tmp_path: Path, redis_url: str, backend: str) -> None:
    config = write_config(tmp_path, redis_url, "tqopen", http="{}")
    with served(backend, config) as base:
        port = base.split(":")[2].split("/")[0]
        for origin in ("https://evil.example", "null"):
            status, body = call_json(base + "/tasks/enqueue", "POST", {"task": "send"}, {"Origin": origin})
            assert (status, "cross-origin" in body["error"]) == (403, True), origin
        assert call_json(base + "/tasks/enqueue", "POST", {"task": "send"})[0] == 201
        own = {"Origin": f"http://127.0.0.1:{port}"}
        assert call_json(base + "/tasks/enqueue", "POST", {"task": "send"}, own)[0] == 201
    assert on(config, lambda broker: broker.queue_depths())["default"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_down_is_a_503_and_an_unhealthy_health(tmp_path: Path, backend: str) -> None:
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "tqdown")
    with served(backend, config) as base:
        started = time.monotonic()
        status, body = call_json(base + "/health")
        assert (status, body["status"]) == (503, "unhealthy")
        assert body["components"]["redis"]["message"].startswith("Redis does not answer")
        assert time.monotonic() - started < 3
        assert call_json(base + "/tasks/queues") == (503, {"error": "Redis is unavailable; try again shortly"})
        status, body = call_json(base + "/health/ready")
        assert (status, body["ready"], body["redis"], body["draining"]) == (503, False, False, False)
        assert call_json(base + "/health/live")[0] == 200
        status, _, text = call(base + "/metrics")
        assert status == 200 and b"taskqueue_redis_up 0.0" in text


@pytest.mark.parametrize("backend", ["asgi", "aiohttp"])
def test_a_mounts_health_is_the_deployments(tmp_path: Path, redis_url: str, backend: str) -> None:
    """A mount runs no worker and no timer: /health counts every runner's live workers, and calls a delayed
    task that no timer promoted in time degraded."""
    config = write_config(tmp_path, redis_url, f"tqhealth{backend}")
    with served(backend, config) as base:
        status, body = call_json(base + "/health")
        assert (status, body["status"]) == (503, "unhealthy")
        assert body["components"]["workers"]["message"] == "no live worker process in this deployment"
        assert body["components"]["scheduler"]["status"] == "healthy"

        cfg = config_mod.load(config, import_tasks=False)
        on(config, lambda broker: broker.heartbeat("w-far", {"host": "h2", "slots": 10, "active": 0}, lease_s(cfg)))
        status, body = call_json(base + "/health")
        assert (status, body["status"]) == (200, "healthy"), body
        assert body["components"]["workers"] | {"heartbeat_age_s": 0} == {
            "status": "healthy",
            "message": None,
            "live": 1,
            "expected": None,
            "host": body["components"]["workers"]["host"],
            "cluster_live": 1,
            "hosts": {"h2": 1},
            "heartbeat_age_s": 0,
        }

        async def overdue(broker: Broker) -> None:
            message = msgpack.packb({"id": "late", "task": "send"})
            await broker.redis.zadd(broker.keys.delayed, {b"default|" + message: int(time.time() * 1000) - 60_000})

        on(config, overdue)
        status, body = call_json(base + "/health")
        scheduler = body["components"]["scheduler"]
        assert (status, body["status"], scheduler["status"]) == (200, "degraded", "degraded"), body
        assert (
            59 < scheduler["overdue_s"] < 70
            and "is a runner with the scheduler enabled running?" in scheduler["message"]
        )


def test_an_enqueue_through_the_fastapi_mount_continues_the_requests_trace(tmp_path: Path, redis_url: str) -> None:
    """FastAPI traces its own requests once a tracer provider is set: the task enqueued through the mount
    carries the trace of the HTTP request that enqueued it (tracing, README)."""
    spans = exporter()
    spans.clear()
    config = write_config(tmp_path, redis_url, "tqtraced")
    with served("asgi", config) as base:
        status, body = call_json(base + "/tasks/enqueue", "POST", {"task": "send"}, auth())
        assert status == 201, body
    (message,) = on(config, lambda broker: broker.redis.lrange(broker.keys.queue("default"), 0, -1))
    _, trace_id, span_id, _ = msgpack.unpackb(message)["trace"].split("-")
    fastapi = {
        (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
        for s in spans.get_finished_spans()
        if s.context and s.instrumentation_scope and s.instrumentation_scope.name == "fastapi"
    }
    assert (trace_id, span_id) in fastapi  # a span of FastAPI's, of the request that enqueued it
