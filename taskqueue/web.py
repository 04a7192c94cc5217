"""The runner's HTTP server (aiohttp): /health, /metrics, the JSON API under route_prefix, the dashboard."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from taskqueue.supervisor import Supervisor

log = logging.getLogger("taskqueue.http")

SUPERVISOR = web.AppKey("supervisor", object)


def create_app(supervisor: Supervisor) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[SUPERVISOR] = supervisor
    http = supervisor.config.http
    if http.enable_health_check:
        app.router.add_get("/health", _health)
    return app


async def _health(request: web.Request) -> web.Response:
    supervisor: Any = request.app[SUPERVISOR]
    started = time.perf_counter()
    try:
        await supervisor.broker.redis.ping()
        redis = {"status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
    except Exception as exc:  # any failure to answer is "unhealthy", reported, never raised
        redis = {"status": "unhealthy", "error": str(exc)}
    live = len(supervisor.workers)
    workers = {"status": "healthy" if live else "degraded", "live": live}
    status = "unhealthy" if redis["status"] != "healthy" else workers["status"]
    body = {"status": status, "components": {"redis": redis, "workers": workers}}
    return web.json_response(body, status=503 if status == "unhealthy" else 200)


async def start(supervisor: Supervisor) -> Callable[[], Awaitable[None]]:
    """Serve on http.host:http.port; returns the coroutine function that stops the server."""
    http = supervisor.config.http
    runner = web.AppRunner(create_app(supervisor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, http.host, http.port)
    await site.start()
    log.info("HTTP on http://%s:%d", http.host, http.port)
    return runner.cleanup
