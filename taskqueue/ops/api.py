"""The HTTP API without a web framework: a route is a function from a `Request` to a `Response`, and
`Api.handle` wraps every route in what they all share — the Host check (DNS rebinding), the router (404,
405), the bearer token or same-origin rule of state-changing routes, the body size limit, JSON errors that
never show a traceback, and the request counter of /metrics.

The runner's own server (`ops/web.py`, aiohttp), the ASGI app (`integrations/asgi.py`) and the aiohttp mount
(`integrations/aiohttp.py`) are adapters of a few lines each: framework request in, `Request` to
`Api.handle`, `Response` back out. So each rule holds identically behind all three.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError
from yarl import URL

from taskqueue._loop import outage
from taskqueue.config import Config, HttpConfig
from taskqueue.ops import metrics as metrics_mod
from taskqueue.ops.health import RunnerView

log = logging.getLogger("taskqueue.http")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as every adapter hands it over. `path` is below the mount point `root` ("" when the app
    is served at the root); header names are lower case; `body` yields the raw body in chunks, read only by
    routes that take one (and then only up to limits.max_payload_size)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]
    root: str = ""
    server: str = ""  # host:port the request came in on, for a request without a Host header


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An expected failure of a request: becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(body).encode(), {"Content-Type": JSON_TYPE, **(headers or {})})


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


Handler = Callable[["Api", Request, Mapping[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """`pattern` is also the `route` label of taskqueue_http_requests_total ("/tasks/dead/{id}/retry")."""

    method: str
    pattern: str
    handler: Handler
    protected: bool = False  # state-changing: the bearer token, or no cross-site request without one
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.pattern)
        source = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        object.__setattr__(self, "regex", re.compile(source + r"\Z"))


def api_base(route_prefix: str) -> str:
    return "" if route_prefix == "/" else route_prefix.rstrip("/")


class Api:
    """Every route of one deployment's HTTP API, for the runner (`state` is the runner) or a mount (`state`
    is an `integrations.Deployment`)."""

    def __init__(self, state: RunnerView, routes: Sequence[Route]) -> None:
        self.state = state
        self.metrics = metrics_mod.Metrics(state.config)
        self.routes = tuple(routes)
        self._pages: dict[str, tuple[bytes, dict[str, str]]] = {}  # the dashboard, per mount point

    @property
    def config(self) -> Config:
        return self.state.config

    async def handle(self, request: Request) -> Response:
        """The response to `request`; never raises (a bug is a 500 with its traceback in the log)."""
        route, params, allowed = self._match(request.method, request.path or "/")
        try:
            refused = foreign_host(request.headers.get("host"), self.config.http)
            if refused:
                response = error(403, refused)
            elif route is None and allowed:
                response = error(405, "Method Not Allowed", {"Allow": ",".join(allowed)})
            elif route is None:
                response = error(404, "Not Found")
            else:
                response = (self._guard(request) if route.protected else None) or await route.handler(
                    self, request, params
                )
        except ApiError as exc:
            response = error(exc.status, exc.message, exc.headers)
        except OutOfMemoryError:  # Redis is up but refuses writes (maxmemory, noeviction): nothing was enqueued
            response = error(507, "Redis is out of memory (maxmemory reached): nothing was written; try again later")
        except (RedisError, OSError) as exc:
            outage.failed(f"serving HTTP {request.method} {request.path}", exc)
            response = error(503, "Redis is unavailable; try again shortly")
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            response = error(500, "internal error (details are in the runner's log)")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        method = request.method if request.method in KNOWN_METHODS else "other"  # clients cannot add label values
        self.metrics.count_request(method, route.pattern if route else "unmatched", response.status)
        return response

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """(the route, its parameters, []) or (None, {}, the methods the path allows: empty for a 404)."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == method or (route.method == "GET" and method == "HEAD"):
                return route, found.groupdict(), []
            allowed += [route.method, "HEAD"] if route.method == "GET" else [route.method]
        return None, {}, sorted(set(allowed))

    def _guard(self, request: Request) -> Response | None:
        """State-changing routes: the bearer token when one is configured; without one, no cross-site requests."""
        token = self.config.http.auth_token
        if token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return error(
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <http.auth_token>)",
                    {"WWW-Authenticate": 'Bearer realm="taskqueue"'},
                )
        elif not same_origin(request):
            # No token to protect us: a page on another site must not make a visitor's browser change state (CSRF).
            return error(403, "cross-origin request refused (set http.auth_token to use the API from other sites)")
        return None

    async def read_body(self, request: Request) -> bytes:
        """The whole body, refused (413) as soon as it is larger than limits.max_payload_size."""
        limit = self.config.max_payload_bytes
        too_large = ApiError(413, f"the body is larger than limits.max_payload_size ({limit} bytes)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.body:
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def dashboard(self, root: str) -> tuple[bytes, dict[str, str]]:
        """The dashboard page for an API mounted at `root` (built once per mount point)."""
        if root not in self._pages:
            http = self.config.http
            self._pages[root] = _dashboard(root, root + api_base(http.route_prefix), http.enable_health_check)
        return self._pages[root]


def foreign_host(given: str | None, http: HttpConfig) -> str | None:
    """Why the request's Host is refused, or None. A page on a domain that an attacker re-points at 127.0.0.1
    (DNS rebinding) is same-origin for the browser, so only the Host it sends gives it away: it must be an
    IP address, localhost, the bound host or one of http.allowed_hosts."""
    if not given:
        return None
    try:
        name = (URL(f"http://{given}").host or "").lower().rstrip(".")
    except ValueError:
        return f"invalid Host header {given[:100]!r}"
    if name in ("localhost", http.host.lower()) or name.endswith(".localhost") or name in http.allowed_hosts:
        return None
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        return f"Host {name[:100]!r} is not this server's name: add it to http.allowed_hosts to serve it"


def same_origin(request: Request) -> bool:
    """No `Origin` (curl, scripts), or one naming this server (directly or as a reverse proxy forwards it)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    hosts = {request.headers.get("host") or request.server, *request.headers.get("x-forwarded-host", "").split(",")}
    try:
        return URL(origin).host_port_subcomponent in {h.strip() for h in hosts if h.strip()}
    except ValueError:  # not a URL at all
        return False


def _dashboard(root: str, api: str, health: bool) -> tuple[bytes, dict[str, str]]:
    """The page, with its paths filled in and a Content-Security-Policy allowing only its own inline code."""
    page = resources.files("taskqueue.ops").joinpath("static", "dashboard.html").read_text("utf-8")
    page = page.replace("__TQ_API__", html.escape(api, quote=True)).replace("__TQ_HEALTH__", "1" if health else "0")
    page = page.replace("__TQ_ROOT__", html.escape(root, quote=True))

    def digest(tag: str) -> str:
        match = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        assert match is not None, f"dashboard.html has no <{tag}>"
        return "'sha256-" + base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode() + "'"

    csp = (
        f"default-src 'none'; script-src {digest('script')}; style-src {digest('style')}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }
    return page.encode("utf-8"), headers
