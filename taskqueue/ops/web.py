"""The runner's HTTP server (aiohttp): every request goes to the framework-neutral API (`ops/api.py`,
`ops/routes.py`) — /health, /metrics, the JSON API under route_prefix, the dashboard. Also the aiohttp
side of `integrations/aiohttp.py`, which mounts the same API in a user's own aiohttp app."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from taskqueue.errors import TaskQueueError
from taskqueue.ops import routes
from taskqueue.ops.api import Api, Request
from taskqueue.ops.health import RunnerView

log = logging.getLogger("taskqueue.http")

API = web.AppKey("api", Api)
CHUNK_BYTES = 64 * 1024
# aiohttp's keep-alive timer, armed when a connection opens and after each response: a connection that has not
# sent a whole request's headers by then is closed, be it idle between requests or a slowloris dripping
# headers that never finish (aiohttp's default is an hour). Behind a proxy, keep the proxy's idle timeout below it.
IDLE_TIMEOUT_S = 15.0


def create_app(state: RunnerView) -> web.Application:
    """The runner's aiohttp app: one catch-all route handing each request to the API."""
    api = routes.build(state)
    app = web.Application(client_max_size=state.config.max_payload_bytes)
    app[API] = api
    app.router.add_route("*", "/{tail:.*}", handler(api))
    return app


def handler(api: Api, root: str = "") -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler serving `api` for requests whose path starts with `root` (its mount point)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        found = await api.handle(
            Request(
                method=request.method,
                path=request.path[len(root) :],
                query={key: request.query[key] for key in request.query},  # the first of repeated keys
                headers={name.lower(): request.headers[name] for name in request.headers},
                body=_chunks(request),
                root=root,
                server=request.host,
            )
        )
        return web.Response(status=found.status, body=found.body, headers=found.headers)

    return serve


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives (Api.read_body stops at the size limit, whatever the app's client_max_size)."""
    while chunk := await request.content.read(CHUNK_BYTES):
        yield chunk


async def start(
    state: RunnerView, bound: list[str] | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S
) -> Callable[[], Awaitable[None]]:
    """Serve on http.host:http.port (0: any free port); returns the coroutine function that stops the server.
    The URLs it listens on are appended to `bound` (for the runner's start banner). A connection without a
    whole request's headers `idle_timeout_s` after it opened, or after its last response, is closed."""
    http = state.config.http
    runner = web.AppRunner(create_app(state), access_log=None, keepalive_timeout=idle_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, http.host, http.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise TaskQueueError(f"cannot serve HTTP on {http.host}:{http.port}: {exc.strerror or exc}") from None
    for address in runner.addresses:
        host, port = address[0], address[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        log.info("HTTP on %s", url)
        if bound is not None:
            bound.append(url)
    if not http.auth_token and not _is_loopback(http.host):
        log.warning(
            "HTTP listens on %s without http.auth_token: ANYONE who can reach it may enqueue tasks and "
            "retry or delete dead-lettered ones. Set http.auth_token (e.g. auth_token: ${TASKQUEUE_AUTH_TOKEN}).",
            http.host,
        )
    return runner.cleanup


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
