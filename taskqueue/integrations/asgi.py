"""The runner's HTTP API — /health, /metrics, the JSON API under http.route_prefix, the dashboard — as a
plain ASGI 3 app, to mount in FastAPI or Starlette or to serve with any ASGI server:

    from fastapi import FastAPI
    from taskqueue.integrations.asgi import create_app

    app = FastAPI()
    app.mount("/tq", create_app("task-queue.yaml"))     # /tq/health, /tq/metrics, /tq/tasks/enqueue, /tq/

It needs no web framework: each request goes to the same routes as the runner's own server (ops/routes.py)
with the same rules (ops/api.py). It connects to the deployment's Redis; it starts no worker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from taskqueue.integrations.deployment import Deployment
from taskqueue.ops import routes
from taskqueue.ops.api import ApiError, Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def create_app(config_path: str | os.PathLike[str]) -> TaskQueueApp:
    """The ASGI app of the deployment that `config_path` (its task-queue.yaml) describes; raises ConfigError."""
    return TaskQueueApp(Deployment.load(config_path))


class TaskQueueApp:
    """An ASGI app serving one deployment's API. A mount receives no lifespan events from Starlette or
    FastAPI: call `aclose()` from the host app's lifespan to close its Redis connections at shutdown."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.api = routes.build(deployment)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: nothing here speaks it
            await send({"type": "websocket.close", "code": 1000})
            return
        response = await self.api.handle(
            Request(
                method=scope["method"],
                path=_route_path(scope),
                query=_query(scope.get("query_string", b"")),
                headers=_headers(scope.get("headers", ())),
                body=_body(receive),
                root=scope.get("root_path", "").rstrip("/"),
                server=_server(scope),
            )
        )
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})

    async def aclose(self) -> None:
        await self.deployment.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Served on its own (not mounted), the server tells it when to close its connections."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _route_path(scope: Scope) -> str:
    """The path below the mount point. Starlette's Mount keeps the whole path in `path` and the mount point
    in `root_path`; a server run with a root path (behind a proxy that strips it) may leave it out of `path`."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :]
    return path


def _query(raw: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        found.setdefault(key, value)  # the first of repeated keys, as aiohttp's request.query.get
    return found


def _headers(raw: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in raw:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _server(scope: Scope) -> str:
    server = scope.get("server")
    if not server or server[1] is None:
        return ""
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client went away before the end of its body")
        yield bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return
