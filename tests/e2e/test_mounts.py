"""The HTTP API mounted in a user's web app — `asgi.create_app` in a real FastAPI app served by uvicorn, and
`aiohttp.add_routes` in a real aiohttp app — driven over HTTP while a real runner (the built PEX) runs the
tasks: enqueue through the mount and see the task run, its status, a cancel, a dead letter retried; /health
and /metrics (promtool-valid) of the deployment; the token rule."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import RunnerFactory, store
from tests.servers import call, call_json, serve_aiohttp, serve_asgi
from tests.test_mounts import aiohttp_app, fastapi_app

TOKEN = "mount-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def mounted(kind: str, config: Path) -> Iterator[str]:
    """The user's app with the deployment's API at /tq; yields the URL of the mount."""
    server = serve_asgi(fastapi_app(config)) if kind == "fastapi" else serve_aiohttp(lambda: aiohttp_app(config))
    with server as url:
        yield url + "/tq"


def status_of(base: str, task_id: str) -> dict[str, Any]:
    code, body = call_json(f"{base}/tasks/task/{task_id}")
    assert code in (200, 404), body
    return body if code == 200 else {}


def enqueue(base: str, body: dict[str, Any]) -> str:
    code, answer = call_json(f"{base}/tasks/enqueue", "POST", body, AUTH)
    assert code == 201, answer
    return str(answer["id"])


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
def test_a_mount_in_a_web_app_drives_a_real_runner(make_runner: RunnerFactory, redis_url: str, kind: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (.ci/run does)"
    runner = make_runner(redis_url, workers=1, slots=4, http={"enabled": False, "auth_token": TOKEN})
    runner.start(expect_workers=1)
    db = store(redis_url)
    with mounted(kind, runner.config) as base:
        code, health = call_json(f"{base}/health")
        assert (code, health["status"]) == (200, "healthy"), health
        assert health["components"]["workers"]["cluster_live"] == 1

        # The token rule: nothing is enqueued without it.
        assert call_json(f"{base}/tasks/enqueue", "POST", {"task": "echo"})[0] == 401
        assert call_json(f"{base}/tasks/enqueue", "POST", {"task": "echo"}, {"Authorization": "Bearer no"})[0] == 401

        # Enqueue through the mount; the runner's worker runs it.
        task_id = enqueue(base, {"task": "echo", "args": [1], "kwargs": {"via": kind}})
        wait_for(lambda: status_of(base, task_id).get("state") == "succeeded", timeout=20, what="the task to run")
        assert Client(redis_url).result(task_id, timeout=5) == {
            "args": [1],
            "kwargs": {"via": kind},
            "task": "echo",
            "queue": "default",
            "attempt": 1,
        }

        # Cancel a running task through the mount.
        running = enqueue(base, {"task": "agated", "args": [7], "kwargs": {"gate": f"test:gate:{kind}"}})
        wait_for(lambda: db.llen("test:started") == 1, timeout=20, what="the gated task to start")
        assert status_of(base, running)["state"] == "running"
        assert call_json(f"{base}/tasks/cancel/{running}", "POST")[0] == 401
        assert call_json(f"{base}/tasks/cancel/{running}", "POST", headers=AUTH) == (
            200,
            {"id": running, "cancel": "cancelling"},
        )
        wait_for(lambda: status_of(base, running).get("state") == "cancelled", timeout=20, what="the cancel")
        assert db.hget("test:runs", "7") is None  # it never finished

        # A dead letter, retried through the mount once its cause is fixed.
        dead = enqueue(base, {"task": "flaky", "args": [5], "kwargs": {"key": kind}})
        wait_for(lambda: status_of(base, dead).get("state") == "failed", timeout=20, what="the dead letter")
        code, listed = call_json(f"{base}/tasks/dead")
        assert code == 200 and [d["id"] for d in listed["dead"]] == [dead]
        assert "is not ready" in listed["dead"][0]["error"]
        assert call_json(f"{base}/tasks/dead/{dead}/retry", "POST")[0] == 401
        db.set(f"test:flaky:{kind}", 1)
        assert call_json(f"{base}/tasks/dead/{dead}/retry", "POST", headers=AUTH) == (200, {"retried": dead})
        wait_for(lambda: status_of(base, dead).get("state") == "succeeded", timeout=20, what="the retried task")
        assert Client(redis_url).result(dead, timeout=5) == 5
        assert call_json(f"{base}/tasks/dead")[1]["total"] == 0

        # The deployment's metrics, valid for Prometheus.
        code, headers, text = call(f"{base}/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'taskqueue_tasks_processed_total{queue="default",task="echo"} 1.0' in text.decode()
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)
        assert (check.returncode, check.stdout + check.stderr) == (0, b""), text.decode()[:2000]

        code, _, page = call(f"{base}/")
        assert code == 200 and '<meta name="tq-api" content="/tq/tasks">' in page.decode()
