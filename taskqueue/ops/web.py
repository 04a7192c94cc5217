"""The runner's HTTP server (aiohttp): /health, /metrics, the JSON API under route_prefix, the dashboard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError
from yarl import URL

from taskqueue._loop import outage
from taskqueue.config import seconds
from taskqueue.config.registry import Registry
from taskqueue.errors import PayloadTooLarge, QueueFull, TaskQueueError, UnknownTask
from taskqueue.ops import admin, health
from taskqueue.ops import metrics as metrics_mod
from taskqueue.ops.health import RunnerView, expected_workers, heartbeat_ages
from taskqueue.store.broker import FAILURES_KEPT

log = logging.getLogger("taskqueue.http")

DEAD_LIMIT_DEFAULT, DEAD_LIMIT_MAX = 50, 500
ENQUEUE_KEYS = frozenset({"task", "args", "kwargs", "queue", "delay"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiError(Exception):
    """An expected failure of a request: becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


STATE = web.AppKey("state", RunnerView)
METRICS = web.AppKey("metrics", metrics_mod.Metrics)
DASHBOARD = web.AppKey("dashboard", bytes)
DASHBOARD_HEADERS = web.AppKey("dashboard_headers", dict[str, str])


def create_app(state: RunnerView) -> web.Application:
    http = state.config.http
    app = web.Application(client_max_size=state.config.max_payload_bytes, middlewares=[_errors])
    app[STATE] = state
    app[METRICS] = metrics_mod.Metrics(state.config)
    api = api_base(http.route_prefix)
    app[DASHBOARD], app[DASHBOARD_HEADERS] = _dashboard(api, http.enable_health_check)
    routes = [
        web.get("/", _serve_dashboard),
        web.get(f"{api}/queues", _queues),
        web.get(f"{api}/workers", _workers),
        web.get(f"{api}/dead", _dead_list),
        web.get(f"{api}/failures", _failures),
        web.get(f"{api}/workflows", _workflows),
        web.get(f"{api}/workflows/{{id}}", _workflow),
        web.get(f"{api}/task/{{id}}", _task_status),
        web.post(f"{api}/enqueue", _protected(_enqueue)),
        web.post(f"{api}/cancel/{{id}}", _protected(_cancel)),
        web.post(f"{api}/dead/{{id}}/retry", _protected(_dead_retry)),
        web.delete(f"{api}/dead/{{id}}", _protected(_dead_delete)),
    ]
    if http.enable_health_check:
        routes.append(web.get("/health", _health))
    if http.enable_metrics:
        routes.append(web.get("/metrics", _prometheus))
    if f"{api}/metrics" != "/metrics" or not http.enable_metrics:
        routes.append(web.get(f"{api}/metrics", _queue_metrics))
    else:
        log.warning("http.route_prefix '/' puts the JSON metrics on /metrics: Prometheus' /metrics wins")
    app.add_routes(routes)
    return app


def api_base(route_prefix: str) -> str:
    return "" if route_prefix == "/" else route_prefix.rstrip("/")


async def start(state: RunnerView) -> Callable[[], Awaitable[None]]:
    """Serve on http.host:http.port (0: any free port); returns the coroutine function that stops the server."""
    http = state.config.http
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, http.host, http.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise TaskQueueError(f"cannot serve HTTP on {http.host}:{http.port}: {exc.strerror or exc}") from None
    for address in runner.addresses:
        host, port = address[0], address[1]
        log.info("HTTP on http://%s:%d", f"[{host}]" if ":" in host else host, port)
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


# ---- plumbing: JSON errors, request counting, auth -----------------------------------------------
def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error with its status; a traceback goes to the log, never to the client."""
    try:
        refused = _foreign_host(request)
        response = _error(403, refused) if refused else await handler(request)
    except ApiError as exc:
        response = _error(exc.status, exc.message)
    except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 (body above client_max_size)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = _error(exc.status, exc.reason, allow)
    except (RedisError, OSError) as exc:
        outage.failed(f"serving HTTP {request.method} {request.path}", exc)
        response = _error(503, "Redis is unavailable; try again shortly")
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        response = _error(500, "internal error (details are in the runner's log)")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    method = request.method if request.method in KNOWN_METHODS else "other"  # clients cannot add label values
    request.app[METRICS].count_request(method, route, response.status)
    return response


def _protected(handler: Handler) -> Handler:
    """State-changing routes: the bearer token when one is configured; without one, no cross-site requests."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[STATE].config.http.auth_token
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return _error(
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <http.auth_token>)",
                    {"WWW-Authenticate": 'Bearer realm="taskqueue"'},
                )
        elif not _same_origin(request):
            # No token to protect us: a page on another site must not make a visitor's browser change state (CSRF).
            return _error(403, "cross-origin request refused (set http.auth_token to use the API from other sites)")
        return await handler(request)

    return guarded


def _foreign_host(request: web.Request) -> str | None:
    """Why the request's Host is refused, or None. A page on a domain that an attacker re-points at 127.0.0.1
    (DNS rebinding) is same-origin for the browser, so only the Host it sends gives it away: it must be an
    IP address, localhost, the bound host or one of http.allowed_hosts."""
    given = request.headers.get("Host")
    if not given:
        return None
    try:
        name = (URL(f"http://{given}").host or "").lower().rstrip(".")
    except ValueError:
        return f"invalid Host header {given[:100]!r}"
    http = request.app[STATE].config.http
    if name in ("localhost", http.host.lower()) or name.endswith(".localhost") or name in http.allowed_hosts:
        return None
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        return f"Host {name[:100]!r} is not this server's name: add it to http.allowed_hosts to serve it"


def _same_origin(request: web.Request) -> bool:
    """No `Origin` (curl, scripts), or one naming this server (directly or as a reverse proxy forwards it)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    hosts = {request.host, *request.headers.get("X-Forwarded-Host", "").split(",")}
    try:
        return URL(origin).host_port_subcomponent in {h.strip() for h in hosts if h.strip()}
    except ValueError:  # not a URL at all
        return False


# ---- /health, /metrics (Prometheus) and the JSON API ------------------------------------------------
async def _health(request: web.Request) -> web.Response:
    body = await health.report(request.app[STATE])
    return web.json_response(body, status=503 if body["status"] == "unhealthy" else 200)


async def _prometheus(request: web.Request) -> web.Response:
    snapshot = await metrics_mod.read_snapshot(request.app[STATE].broker)
    body = request.app[METRICS].render(snapshot)
    return web.Response(body=body, headers={"Content-Type": metrics_mod.CONTENT_TYPE})


async def _queue_metrics(request: web.Request) -> web.Response:
    """The seed's TaskQueueMetrics."""
    found = await admin.status(request.app[STATE].broker)
    pending = sum(q["pending"] for q in found["queues"])
    active = len(found["workers"])
    return web.json_response(
        {
            "active_workers": active,
            "tasks_per_worker": round(pending / max(active, 1), 3),
            "total_pending_tasks": pending,
            "delayed_tasks": found["delayed"],
            "dead_tasks": found["dead"],
            "queue_metrics": [
                {
                    "queue_name": q["name"],
                    "pending_tasks": q["pending"],
                    "processed_tasks": q["processed"],
                    "failed_tasks": q["failed"],
                }
                for q in found["queues"]
            ],
        }
    )


async def _queues(request: web.Request) -> web.Response:
    broker = request.app[STATE].broker
    found = await admin.status(broker)
    ages = metrics_mod.oldest_ages(await broker.oldest_ready(), broker.config.max_payload_bytes)
    queues = [
        {
            **q,
            "priority": broker.config.queue(q["name"]).priority,
            "max_length": broker.config.queue(q["name"]).max_length,
            "oldest_age_s": round(ages[q["name"]], 3) if q["name"] in ages else None,
        }
        for q in found["queues"]
    ]
    return web.json_response({"queues": queues, "delayed": found["delayed"], "dead": found["dead"]})


async def _workers(request: web.Request) -> web.Response:
    """Every worker with a live lease and every worker process of this runner (one that has not registered
    yet shows as "starting", one whose lease ran out as "lease expired"), so the counts above the table are
    counts of its rows. `in_flight` is read now (the in-flight hash); `active` is the last heartbeat's."""
    state = request.app[STATE]
    local = {wid: bool(getattr(handle, "retiring", False)) for wid, handle in state.workers.items()}
    leases, rows = await state.broker.worker_rows(list(local))
    ages = heartbeat_ages(leases, state.config)
    now = time.time() * 1000
    workers = []
    for wid, info in rows.items():
        if wid not in leases:
            status = "starting"
        elif leases[wid] < now:
            status = "lease expired"
        else:
            status = "retiring" if local.get(wid) else "live"
        workers.append(
            {
                **info,
                "id": wid,
                "status": status,
                "heartbeat_age_s": round(ages[wid], 3) if wid in ages else None,
                "local": wid in local,
            }
        )
    workers.sort(key=lambda w: (not w["local"], w.get("host", ""), w["id"]))
    live = sum(w["status"] in ("live", "retiring") for w in workers)
    return web.json_response(
        {
            "workers": workers,
            "live": live,  # rows with a live lease, of every runner
            "local": len(local),  # this runner's worker processes (rows marked local)
            "local_live": sum(w["local"] and w["status"] in ("live", "retiring") for w in workers),
            "expected": expected_workers(state),  # this runner's target count
            "in_flight": sum(w["in_flight"] for w in workers),
            "read_at": round(time.time(), 3),
        }
    )


async def _failures(request: web.Request) -> web.Response:
    """`{"failures": [{id, task, queue, attempt, error, at, retry_in, will_retry, worker}, ...], "kept"}`: the
    newest failed attempts, retried or dead-lettered, newest first (`?limit=`, 1-FAILURES_KEPT)."""
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= FAILURES_KEPT:
        raise ApiError(400, f"limit must be a whole number from 1 to {FAILURES_KEPT}")
    found = await request.app[STATE].broker.recent_failures(int(raw))
    return web.json_response({"failures": [f.public() for f in found], "kept": FAILURES_KEPT})


async def _dead_list(request: web.Request) -> web.Response:
    broker = request.app[STATE].broker
    raw = request.query.get("limit", str(DEAD_LIMIT_DEFAULT))
    if not raw.isdigit() or not 1 <= int(raw) <= DEAD_LIMIT_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {DEAD_LIMIT_MAX}")
    records = await broker.dead_records(await broker.dead_ids(int(raw)))
    return web.json_response({"dead": [r.public() for r in records], "total": await broker.dead_count()})


async def _workflows(request: web.Request) -> web.Response:
    """`{"workflows": [{id, state, steps, done, failed, created}, ...]}`, newest first (`?limit=`, 1-500)."""
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise ApiError(400, "limit must be a whole number from 1 to 500")
    return web.json_response({"workflows": await request.app[STATE].broker.recent_workflows(int(raw))})


async def _workflow(request: web.Request) -> web.Response:
    """`{"id", "state", "steps": [{"index", "id", "task", "state"}, ...]}`, or 404."""
    workflow_id = request.match_info["id"]
    found = await request.app[STATE].broker.workflow(workflow_id)
    if found is None:
        raise ApiError(404, f"no workflow {workflow_id} (unknown, or expired after its result_ttl)")
    return web.json_response(found)


async def _task_status(request: web.Request) -> web.Response:
    """Client.status() of one task: {"id", "task", "state", "queue", "attempt", "progress", "waiting", ...}, or 404."""
    task_id = request.match_info["id"]
    found = await request.app[STATE].broker.status(task_id)
    if found is None:
        raise ApiError(404, f"no task {task_id} (unknown, or finished longer ago than its result_ttl)")
    return web.json_response(found)


async def _cancel(request: web.Request) -> web.Response:
    """Cancel a task or a workflow: 200 {"id", "cancel": "cancelled" | "cancelling"}, or 404 (unknown or finished)."""
    task_id = request.match_info["id"]
    answer = await request.app[STATE].broker.cancel(task_id)
    if answer == "not_found":
        raise ApiError(404, f"no task {task_id} to cancel (unknown, or finished already)")
    return web.json_response({"id": task_id, "cancel": answer})


async def _dead_retry(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    done, problems = await admin.retry_dead(request.app[STATE].broker, [task_id])
    if done:
        return web.json_response({"retried": task_id})
    problem = problems[0] if problems else f"{task_id}: not in the dead-letter store"
    raise ApiError(404 if problem.endswith("not in the dead-letter store") else 409, problem)


async def _dead_delete(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    if not await request.app[STATE].broker.drop_dead([task_id]):
        raise ApiError(404, f"{task_id}: not in the dead-letter store")
    return web.json_response({"deleted": task_id})


async def _enqueue(request: web.Request) -> web.Response:
    """`{"task", "args"?, "kwargs"?, "queue"?, "delay"?}` → 201 `{"id"}`; the same checks as the CLI's enqueue."""
    broker = request.app[STATE].broker
    config = broker.config
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, f"the body is larger than limits.max_payload_size ({config.max_payload_bytes} bytes)"
        ) from None
    except (ValueError, RecursionError):
        raise ApiError(400, "the body must be JSON") from None
    task, args, kwargs, queue, delay_s = _enqueue_fields(body)
    tasks = getattr(request.app[STATE], "registry", None)  # the runner's imported tasks (not every host has them)
    problem = tasks.call_problem(config, task, args, kwargs) if isinstance(tasks, Registry) else None
    if problem:
        raise ApiError(400, problem)  # it would only be dead-lettered
    try:
        task_id, queue = await admin.enqueue(broker, task, args, kwargs, queue, delay_s)
    except (UnknownTask, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    except PayloadTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except QueueFull as exc:
        raise ApiError(429, str(exc)) from None
    return web.json_response({"id": task_id, "queue": queue}, status=201)


def _enqueue_fields(body: Any) -> tuple[str, list[Any], dict[str, Any], str | None, float]:
    """The body's shape; what it names (task, queue) is checked by admin.enqueue, as for the CLI."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - ENQUEUE_KEYS)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(ENQUEUE_KEYS))})")
    task, args, kwargs, queue = body.get("task"), body.get("args", []), body.get("kwargs", {}), body.get("queue")
    if not isinstance(task, str):
        raise ApiError(400, "'task' must be the name of a declared task")
    if not isinstance(args, list):
        raise ApiError(400, "'args' must be an array")
    if not isinstance(kwargs, dict):
        raise ApiError(400, "'kwargs' must be an object")
    if queue is not None and not isinstance(queue, str):
        raise ApiError(400, "'queue' must be a queue name")
    return task, args, kwargs, queue, _delay(body.get("delay", 0))


def _delay(value: Any) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        delay_s = seconds(value)
    except ValueError:
        raise ApiError(400, "'delay' must be seconds or a duration like 30s, 5m") from None
    if not math.isfinite(delay_s) or delay_s < 0:
        raise ApiError(400, "'delay' must be a finite number of seconds, at least 0")
    return delay_s


# ---- the dashboard -------------------------------------------------------------------------------
def _dashboard(api: str, health: bool) -> tuple[bytes, dict[str, str]]:
    """The page, with its API prefix filled in and a Content-Security-Policy allowing only its own inline code."""
    page = resources.files("taskqueue.ops").joinpath("static", "dashboard.html").read_text("utf-8")
    page = page.replace("__TQ_API__", html.escape(api, quote=True)).replace("__TQ_HEALTH__", "1" if health else "0")

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


async def _serve_dashboard(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DASHBOARD], headers=request.app[DASHBOARD_HEADERS])
