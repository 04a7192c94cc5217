"""`add_routes(app, config_path, prefix="/tq")`: the runner's HTTP API — /health, /metrics, the JSON API
under http.route_prefix, the dashboard — mounted under `prefix` in your own aiohttp app:

    from aiohttp import web
    from taskqueue.integrations.aiohttp import add_routes

    app = web.Application()
    add_routes(app, "task-queue.yaml", prefix="/tq")    # /tq/health, /tq/metrics, /tq/tasks/enqueue, /tq/

The same routes and rules as the runner's own server (ops/routes.py, ops/api.py). It connects to the
deployment's Redis (closed on the app's cleanup); it starts no worker.
"""

from __future__ import annotations

import os

from aiohttp import web

from taskqueue.integrations.deployment import Deployment
from taskqueue.ops import routes
from taskqueue.ops.web import handler


def add_routes(app: web.Application, config_path: str | os.PathLike[str], prefix: str = "/tq") -> Deployment:
    """Serve the deployment that `config_path` describes under `prefix` ("" for the root) in `app`;
    returns it (its `.config`, its `.broker` on the app's loop). Raises ConfigError."""
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"prefix must start with '/', got {prefix!r}")
    deployment = Deployment.load(config_path)
    serve = handler(routes.build(deployment), prefix)
    if prefix:
        app.router.add_route("*", prefix, serve)  # the dashboard, without the trailing slash
    app.router.add_route("*", f"{prefix}/{{tail:.*}}", serve)

    async def close(_: web.Application) -> None:
        await deployment.aclose()

    app.on_cleanup.append(close)
    return deployment
