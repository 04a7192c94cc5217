"""Each route of the HTTP API, once, framework-neutral (`api.Request` in, `api.Response` out): /health,
/metrics, the JSON API under http.route_prefix and the dashboard. `table()` lists them for `api.Api`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from taskqueue.config import Config, seconds
from taskqueue.config.registry import Registry
from taskqueue.errors import PayloadTooLarge, QueueFull, UnknownTask
from taskqueue.ops import admin, health, load
from taskqueue.ops import metrics as metrics_mod
from taskqueue.ops.api import Api, ApiError, Request, Response, Route, api_base, json_response
from taskqueue.ops.health import RunnerView, expected_workers, heartbeat_ages
from taskqueue.store import lookup
from taskqueue.store.broker import FAILURES_KEPT

log = logging.getLogger("taskqueue.http")

DEAD_LIMIT_DEFAULT, DEAD_LIMIT_MAX = 50, 500
ENQUEUE_KEYS = frozenset({"task", "args", "kwargs", "queue", "delay"})
Params = Mapping[str, str]


def table(config: Config) -> list[Route]:
    """The routes `config.http` asks for: the JSON API under route_prefix, /health and /metrics if enabled."""
    http = config.http
    api = api_base(http.route_prefix)
    routes = [
        Route("GET", "/", dashboard),
        Route("GET", f"{api}/queues", queues),
        Route("GET", f"{api}/workers", workers),
        Route("GET", f"{api}/dead", dead_list),
        Route("GET", f"{api}/failures", failures),
        Route("GET", f"{api}/workflows", workflows),
        Route("GET", f"{api}/workflows/{{id}}", workflow),
        Route("GET", f"{api}/task/{{id}}", task_status),
        Route("GET", "/tasks/load", tasks_load),  # at the root, as /metrics: what KEDA's metrics-api scaler reads
        Route("POST", f"{api}/enqueue", enqueue, protected=True),
        Route("POST", f"{api}/cancel/{{id}}", cancel, protected=True),
        Route("POST", f"{api}/dead/{{id}}/retry", dead_retry, protected=True),
        Route("DELETE", f"{api}/dead/{{id}}", dead_delete, protected=True),
    ]
    if http.enable_health_check:
        routes.append(Route("GET", "/health", health_report))
        routes.append(Route("GET", "/health/live", health_live))
        routes.append(Route("GET", "/health/ready", health_ready))
    if http.enable_metrics:
        routes.append(Route("GET", "/metrics", prometheus))
    if f"{api}/metrics" != "/metrics" or not http.enable_metrics:
        routes.append(Route("GET", f"{api}/metrics", queue_metrics))
    else:
        log.warning("http.route_prefix '/' puts the JSON metrics on /metrics: Prometheus' /metrics wins")
    return routes


# ---- /health, /metrics (Prometheus), the dashboard ----------------------------------------------------
async def health_report(api: Api, request: Request, params: Params) -> Response:
    body = await health.report(api.state)
    return json_response(body, status=503 if body["status"] == "unhealthy" else 200)


async def health_live(api: Api, request: Request, params: Params) -> Response:
    return json_response(health.liveness())


async def health_ready(api: Api, request: Request, params: Params) -> Response:
    body = await health.readiness(api.state)
    return json_response(body, status=200 if body["ready"] else 503)


async def prometheus(api: Api, request: Request, params: Params) -> Response:
    snapshot = await metrics_mod.read_snapshot(api.state.broker)
    return Response(200, api.metrics.render(snapshot), {"Content-Type": metrics_mod.CONTENT_TYPE})


async def dashboard(api: Api, request: Request, params: Params) -> Response:
    page, headers = api.dashboard(request.root)
    return Response(200, page, dict(headers))


# ---- the JSON API: reads ------------------------------------------------------------------------------
async def queue_metrics(api: Api, request: Request, params: Params) -> Response:
    """The seed's TaskQueueMetrics."""
    found = await admin.status(api.state.broker)
    pending = sum(q["pending"] for q in found["queues"])
    active = len(found["workers"])
    return json_response(
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


async def tasks_load(api: Api, request: Request, params: Params) -> Response:
    """ops/load.py's figure: `{"load", "work", "slots", "workers", "queues": {name: {"load", ...}}}`."""
    return json_response(await load.read(api.state.broker))


async def queues(api: Api, request: Request, params: Params) -> Response:
    broker = api.state.broker
    found = await admin.status(broker)
    ages = metrics_mod.oldest_ages(await broker.oldest_ready(), broker.config.max_payload_bytes)
    listed = [
        {
            **q,
            "priority": broker.config.queue(q["name"]).priority,
            "max_length": broker.config.queue(q["name"]).max_length,
            "oldest_age_s": round(ages[q["name"]], 3) if q["name"] in ages else None,
        }
        for q in found["queues"]
    ]
    return json_response({"queues": listed, "delayed": found["delayed"], "dead": found["dead"]})


async def workers(api: Api, request: Request, params: Params) -> Response:
    """Every worker with a live lease and every worker process of this runner (one that has not registered
    yet shows as "starting", one whose lease ran out as "lease expired"), so the counts above the table are
    counts of its rows. `in_flight` is read now (the in-flight hash); `active` is the last heartbeat's."""
    state = api.state
    local = {wid: bool(getattr(handle, "retiring", False)) for wid, handle in state.workers.items()}
    leases, rows = await state.broker.worker_rows(list(local))
    ages = heartbeat_ages(leases, state.config)
    now = time.time() * 1000
    listed = []
    for wid, info in rows.items():
        if wid not in leases:
            status = "starting"
        elif leases[wid] < now:
            status = "lease expired"
        else:
            status = "retiring" if local.get(wid) else "live"
        listed.append(
            {
                **info,
                "id": wid,
                "status": status,
                "heartbeat_age_s": round(ages[wid], 3) if wid in ages else None,
                "local": wid in local,
            }
        )
    listed.sort(key=lambda w: (not w["local"], w.get("host", ""), w["id"]))
    return json_response(
        {
            "workers": listed,
            "live": sum(w["status"] in ("live", "retiring") for w in listed),  # rows with a live lease
            "local": len(local),  # this runner's worker processes (rows marked local)
            "local_live": sum(w["local"] and w["status"] in ("live", "retiring") for w in listed),
            "expected": expected_workers(state),  # this runner's target count
            "in_flight": sum(w["in_flight"] for w in listed),
            "read_at": round(time.time(), 3),
        }
    )


async def failures(api: Api, request: Request, params: Params) -> Response:
    """`{"failures": [{id, task, queue, attempt, error, at, retry_in, will_retry, worker}, ...], "kept"}`: the
    newest failed attempts, retried or dead-lettered, newest first (`?limit=`, 1-FAILURES_KEPT)."""
    found = await api.state.broker.recent_failures(_limit(request, 20, FAILURES_KEPT))
    return json_response({"failures": [f.public() for f in found], "kept": FAILURES_KEPT})


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiError(400, f"limit must be a whole number from 1 to {most}")
    return int(raw)


async def dead_list(api: Api, request: Request, params: Params) -> Response:
    broker = api.state.broker
    records = await broker.dead_records(await broker.dead_ids(_limit(request, DEAD_LIMIT_DEFAULT, DEAD_LIMIT_MAX)))
    return json_response({"dead": [r.public() for r in records], "total": await broker.dead_count()})


async def workflows(api: Api, request: Request, params: Params) -> Response:
    """`{"workflows": [{id, state, steps, done, failed, created}, ...]}`, newest first (`?limit=`, 1-500)."""
    return json_response({"workflows": await api.state.broker.recent_workflows(_limit(request, 50, 500))})


async def workflow(api: Api, request: Request, params: Params) -> Response:
    """`{"id", "state", "steps": [{"index", "id", "task", "state"}, ...]}`, or 404."""
    found = await api.state.broker.workflow(params["id"])
    if found is None:
        raise ApiError(404, f"no workflow {params['id']} (unknown, or expired after its result_ttl)")
    return json_response(found)


async def task_status(api: Api, request: Request, params: Params) -> Response:
    """Client.status() of one task: {"id", "task", "state", "queue", "attempt", "progress", "waiting", "result",
    ...}, or 404."""
    found = await api.state.broker.status(params["id"])
    if found is None:
        raise ApiError(404, f"no task {params['id']} (unknown, or finished longer ago than its result_ttl)")
    return json_response({**found, "result": lookup.jsonable(found["result"])})


# ---- the JSON API: changes (Route.protected) ----------------------------------------------------------
async def cancel(api: Api, request: Request, params: Params) -> Response:
    """Cancel a task or a workflow: 200 {"id", "cancel": "cancelled" | "cancelling" | "already_cancelled"}, or 404
    (unknown or finished)."""
    task_id = params["id"]
    answer = await api.state.broker.cancel(task_id)
    if answer == "not_found":
        raise ApiError(404, f"no task {task_id} to cancel (unknown, or finished already)")
    return json_response({"id": task_id, "cancel": answer})


async def dead_retry(api: Api, request: Request, params: Params) -> Response:
    task_id = params["id"]
    done, problems = await admin.retry_dead(api.state.broker, [task_id])
    if done:
        return json_response({"retried": task_id})
    problem = problems[0] if problems else f"{task_id}: not in the dead-letter store"
    raise ApiError(404 if problem.endswith("not in the dead-letter store") else 409, problem)


async def dead_delete(api: Api, request: Request, params: Params) -> Response:
    task_id = params["id"]
    if not await api.state.broker.drop_dead([task_id]):
        raise ApiError(404, f"{task_id}: not in the dead-letter store")
    return json_response({"deleted": task_id})


async def enqueue(api: Api, request: Request, params: Params) -> Response:
    """`{"task", "args"?, "kwargs"?, "queue"?, "delay"?}` → 201 `{"id"}`; the same checks as the CLI's enqueue."""
    broker = api.state.broker
    raw = await api.read_body(request)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body must be JSON") from None
    task, args, kwargs, queue, delay_s = _enqueue_fields(body)
    tasks = getattr(api.state, "registry", None)  # the runner's imported tasks (not every host has them)
    problem = tasks.call_problem(broker.config, task, args, kwargs) if isinstance(tasks, Registry) else None
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
    return json_response({"id": task_id, "queue": queue}, status=201)


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


def build(state: RunnerView) -> Api:
    """The API of `state` (a health.RunnerView: the runner, or a mount's Deployment) with every route it serves."""
    return Api(state, table(state.config))
