"""Running under an orchestrator (SPEC §17) through the built PEX: /health/live and /health/ready across a Redis
stop and a SIGTERM with a task running, the load figure against a known backlog, the start banner with and
without Redis persistence, and the wait for a Redis that is down at start (`--fail-fast` to exit instead)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from taskqueue.client import Client
from tests.conftest import RedisServer, _start_server, free_port, wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs, store
from tests.e2e.test_http import fetch, http_url, metric_values


def probe(base: str, which: str) -> tuple[int, dict[str, Any]]:
    status, body = fetch(f"{base}/health/{which}")
    return status, json.loads(body)


def messages(runner: Runner) -> list[dict[str, Any]]:
    return [line for line in runner.logs() if isinstance(line.get("msg"), str)]


def test_live_and_ready_follow_a_redis_that_stops_and_comes_back(
    own_redis: RedisServer, make_runner: RunnerFactory
) -> None:
    runner = make_runner(own_redis.url, workers=1, http={"port": 0}).start(expect_workers=1)
    base = http_url(runner)
    assert probe(base, "live")[0] == 200
    status, body = probe(base, "ready")
    assert (status, body["ready"], body["redis"], body["draining"], body["message"]) == (200, True, True, False, None)
    own_redis.stop(kill=True)
    wait_for(lambda: probe(base, "ready")[0] == 503, timeout=10, what="/health/ready to answer 503")
    status, body = probe(base, "ready")
    assert (status, body["ready"], body["redis"], body["draining"]) == (503, False, False, False)
    assert body["message"].startswith("Redis does not answer")
    assert probe(base, "live")[0] == 200  # an outage is ridden out, not a reason to restart the pod
    own_redis.start()
    wait_for(lambda: probe(base, "ready")[0] == 200, timeout=20, what="/health/ready to answer 200 again")


def test_sigterm_makes_ready_false_at_once_and_the_running_task_finishes(
    redis_url: str, make_runner: RunnerFactory
) -> None:
    runner = make_runner(redis_url, workers=1, grace="20s", http={"port": 0}).start(expect_workers=1)
    base = http_url(runner)
    client = Client(redis_url)
    task_id = client.enqueue("gated", 7)
    wait_for(lambda: store(redis_url).llen("test:started") == 1, timeout=10, what="the task to start")
    runner.signal(signal.SIGTERM)
    wait_for(lambda: probe(base, "ready")[0] == 503, timeout=2, what="/health/ready 503 right after SIGTERM")
    body = probe(base, "ready")[1]
    assert (body["ready"], body["draining"], body["redis"]) == (False, True, True)
    assert probe(base, "live")[0] == 200
    assert runner.alive() and runs(redis_url) == {}  # the task still runs: the HTTP server outlives the drain
    store(redis_url).set("test:gate", 1)
    assert runner.wait(30) == 0
    assert runs(redis_url) == {7: 1}
    found = client.status(task_id)
    assert found is not None and found["state"] == "succeeded"


def test_the_load_counts_ready_due_delayed_and_running_work_per_worker_slot(
    redis_url: str, make_runner: RunnerFactory
) -> None:
    """2 worker processes x 10 slots, all 20 busy; 30 ready and 10 delayed that are due: (30 + 10 + 20) / 20."""
    runner = make_runner(redis_url, workers=2, slots=10, http={"port": 0})
    text = runner.config.read_text().replace("scheduler: {tick_interval: 200ms}", "scheduler: {enabled: false}")
    runner.config.write_text(text)  # no timer: the due delayed tasks stay in the delayed set
    runner.start(expect_workers=2)
    base = http_url(runner)
    client = Client(redis_url)
    for n in range(20):
        client.enqueue("gated", 200 + n)
    wait_for(lambda: store(redis_url).llen("test:started") == 20, timeout=20, what="20 running tasks")
    for n in range(30):
        client.enqueue("record", n, queue="low_priority")
    for n in range(10):
        client.enqueue("record", 100 + n, delay=0.05)
    time.sleep(0.1)  # not synchronisation: the delays must have passed (due), which only time does
    status, body = fetch(f"{base}/tasks/load")
    found = json.loads(body)
    assert status == 200
    assert (found["slots"], found["workers"], found["work"], found["load"]) == (20, 2, 60, 3.0)
    assert found["queues"]["default"] == {"load": 1.5, "ready": 0, "delayed_due": 10, "running": 20}
    assert found["queues"]["low_priority"] == {"load": 1.5, "ready": 30, "delayed_due": 0, "running": 0}
    assert metric_values(base, "taskqueue_load")[(("queue", "default"),)] == 1.5
    assert metric_values(base, "taskqueue_deployment_load")[()] == 3.0
    store(redis_url).set("test:gate", 1)
    wait_for(lambda: len(runs(redis_url)) == 50, timeout=30, what="the gated and ready tasks to run")
    # the 10 due delayed ones wait for a timer (there is none)
    wait_for(lambda: json.loads(fetch(f"{base}/tasks/load")[1])["work"] == 10, timeout=30, what="work 10")
    assert json.loads(fetch(f"{base}/tasks/load")[1])["load"] == 0.5


def test_with_no_live_worker_the_load_is_the_work_itself(redis_url: str, make_runner: RunnerFactory) -> None:
    runner = make_runner(redis_url, workers=0, http={"port": 0}).start()
    base = http_url(runner)
    client = Client(redis_url)
    for n in range(3):
        client.enqueue("record", n)
    found = json.loads(fetch(f"{base}/tasks/load")[1])
    assert (found["slots"], found["work"], found["load"]) == (0, 3, 3.0)


def banner(runner: Runner) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [m for m in messages(runner) if m["msg"].startswith("taskqueue ") and " | config " in m["msg"]]
        return bool(found)

    wait_for(logged, timeout=20, what="the start banner")
    assert len(found) == 1
    return found[0]


def test_the_banner_says_where_redis_is_and_that_it_persists(
    own_redis: RedisServer, make_runner: RunnerFactory
) -> None:
    url = own_redis.url  # AOF on (the own_redis fixture)
    runner = make_runner(url, workers=2, slots=10, http={"port": 0}).start(expect_workers=2)
    line = banner(runner)
    version = own_redis.client().info("server")["redis_version"]
    assert line["level"] == "info"
    text = line["msg"]
    assert f"config {runner.config.resolve()}" in text
    assert f"Redis at {url} (Redis {version}, persistence AOF)" in text
    assert "shards 1 | queues " in text and "default (priority " in text
    assert "workers 2 x 10 slots" in text and f"HTTP {http_url(runner)}" in text


def test_the_banner_warns_when_redis_persists_nothing_and_hides_the_password(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    server = _start_server(tmp_path)  # --save "" and no AOF: a restart loses everything
    server.client().config_set("requirepass", "s3cret")
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        runner = make_runner(url, workers=1, http={"port": 0}).start()
        line = banner(runner)
        assert line["level"] == "warning"
        assert "Redis at redis://:***@127.0.0.1" in line["msg"] and "s3cret" not in runner.log.read_text()
        assert "persistence OFF" in line["msg"] and "a restart of this Redis loses every queued task" in line["msg"]
        runner.stop()
    finally:
        server.stop(kill=True)


def test_a_runner_waits_for_a_redis_that_is_down_at_start(tmp_path: Path, make_runner: RunnerFactory) -> None:
    server = RedisServer(port=free_port(), dir=tmp_path)
    runner = make_runner(server.url, workers=1).start()
    wait_for(
        lambda: any(m["msg"].startswith("waiting for Redis at") for m in messages(runner)),
        timeout=20,
        what="the 'waiting for Redis' line",
    )
    assert runner.alive()
    try:
        server.start()
        wait_for(lambda: len(runner.worker_pids()) == 1, timeout=30, what="the runner to start its worker")
        Client(server.url).enqueue("record", 1)
        wait_for(lambda: runs(server.url) == {1: 1}, timeout=10, what="the task to run")
        assert sum(m["msg"].startswith("waiting for Redis") for m in messages(runner)) == 1  # said once
        runner.stop()
    finally:
        server.stop(kill=True)


def test_fail_fast_exits_at_once_with_one_line(tmp_path: Path, make_runner: RunnerFactory) -> None:
    port = free_port()
    url, shown = f"redis://:s3cret@127.0.0.1:{port}/0", f"redis://:***@127.0.0.1:{port}/0"
    for command in ("run", "worker"):
        runner = make_runner(url, command=command, args=["--fail-fast"])
        runner.start()
        try:
            assert runner.wait(30) == 1
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`{command} --fail-fast` waited for Redis") from None
        lines = [line for line in runner.log.read_text().splitlines() if line.strip()]
        assert lines == [f"taskqueue: cannot reach Redis at {shown}: {lines[0].split(': ', 2)[2]}"], lines
        assert "Connection refused" in lines[0]


def test_the_builtin_autoscaler_in_a_kubernetes_pod_is_a_warning(redis_url: str, make_runner: RunnerFactory) -> None:
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    on = make_runner(redis_url, workers=1, autoscaler="{enabled: true, max_workers: 2}", env=pod).start()
    off = make_runner(redis_url, workers=1, env=pod).start()
    for runner in (on, off):
        banner(runner)
    said = [m["msg"] for m in messages(on) if "the built-in autoscaler is on in a Kubernetes pod" in m["msg"]]
    assert len(said) == 1 and "autoscaler: {enabled: false}" in said[0]
    assert not any("Kubernetes pod" in m["msg"] for m in messages(off))
