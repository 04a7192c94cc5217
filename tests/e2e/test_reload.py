"""Live reload through the built PEX: a broken YAML is rejected and the old config keeps working; a new
task starts to run without a restart, and no task in flight is lost or run twice. `reload` asks through
Redis and prints the verdicts; it never signals a process that is not a live runner of that config."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from taskqueue import config as config_mod
from taskqueue.client import Client, chain, step
from taskqueue.errors import TaskFailed
from taskqueue.store.broker import Broker
from taskqueue.store.keys import Keys
from taskqueue.worker.worker import LEASE_HEARTBEATS
from tests.conftest import wait_for
from tests.e2e.harness import Runner, pex_cmd, runs, store, write_config
from tests.e2e.test_http import http_url
from tests.servers import call_json

NEW_TASK = "  added_later: {path: testjobs.tasks:added_later}\n"


@pytest.fixture
def runner(pex: Path, tmp_path: Path, redis_url: str) -> Iterator[Runner]:
    config = write_config(tmp_path, redis_url, workers=2, slots=5)
    started = Runner(pex, config, redis_url, tmp_path / "runner.log").start(expect_workers=2)
    yield started
    started.stop()


def _messages(runner: Runner) -> list[str]:
    return [str(line.get("msg", "")) for line in runner.logs()]


def test_broken_yaml_is_rejected_and_the_running_config_stays(runner: Runner, redis_url: str) -> None:
    good = runner.config.read_text()
    runner.config.write_text(good.replace("tasks:", "tasks:\n  broken: {path: 'nope.mod:fn', queue: hihg}", 1))
    runner.signal(signal.SIGHUP)
    wait_for(lambda: any("reload rejected" in m for m in _messages(runner)), timeout=15, what="the rejection")
    problems = [m for m in _messages(runner) if "tasks.broken." in m]
    assert any("unknown queue 'hihg'" in m for m in problems), problems
    assert any("cannot import 'nope.mod:fn'" in m for m in problems), problems
    Client(redis_url).enqueue("record", 1)
    wait_for(lambda: runs(redis_url) == {1: 1}, timeout=15, what="a task under the old config")
    assert runner.alive()


def test_new_task_runs_after_reload_and_nothing_in_flight_is_lost(runner: Runner, redis_url: str) -> None:
    pids_before = set(runner.worker_pids())
    client = Client(redis_url)
    client.enqueue_many([("slow_once", (n, 6.0), {}) for n in range(6)])  # running across the reload
    wait_for(lambda: store(redis_url).exists(*(f"test:slow:{n}" for n in range(6))) == 6, timeout=10, what="starts")
    runner.config.write_text(runner.config.read_text().replace("tasks:\n", "tasks:\n" + NEW_TASK, 1))
    result = pex_cmd(runner.pex, runner.config, "reload", redis_url=redis_url)  # returns with the verdict
    assert result.returncode == 0, result.stderr
    wait_for(lambda: any(m.startswith("reloaded ") for m in _messages(runner)), timeout=15, what="the reload")
    assert any("tasks added: added_later" in m for m in _messages(runner))
    client.refresh()
    client.enqueue("added_later", 100)
    wait_for(lambda: runs(redis_url).get(100) == 1, timeout=20, what="the new task to run")
    wait_for(lambda: len(runs(redis_url)) == 7, timeout=30, what="the tasks that were in flight")
    assert runs(redis_url) == {**{n: 1 for n in range(6)}, 100: 1}  # none lost, none run twice
    wait_for(lambda: not set(runner.worker_pids()) & pids_before, timeout=20, what="old workers retired")
    wait_for(lambda: len(runner.worker_pids()) == 2, timeout=20, what="both new workers")  # one may still start


def test_a_workflow_step_whose_task_was_removed_fails_the_workflow(runner: Runner, redis_url: str) -> None:
    """The workflow was laid out while `total` was declared; a reload removed it before its step's turn. The
    step is dead-lettered as an unknown task, and that fails the workflow instead of leaving it running."""
    client = Client(redis_url)
    flow = client.enqueue_workflow(chain(step("gated", 1), step("total")))
    wait_for(lambda: store(redis_url).llen("test:started") == 1, timeout=20, what="the first step to start")
    runner.config.write_text(runner.config.read_text().replace("  total: {path: testjobs.tasks:total}\n", "", 1))
    runner.signal(signal.SIGHUP)
    wait_for(lambda: any(m.startswith("reloaded ") for m in _messages(runner)), timeout=15, what="the reload")
    store(redis_url).set("test:gate", 1)  # the old workers finish the first step; the new ones know no `total`
    with pytest.raises(TaskFailed, match="unknown task 'total'"):
        client.result(flow, timeout=30)
    shown = client.workflow(flow)
    assert shown is not None and [s["state"] for s in shown["steps"]] == ["succeeded", "failed"]


def test_after_a_reload_http_judges_arguments_by_the_new_code(pex: Path, tmp_path: Path, redis_url: str) -> None:
    """The reload is checked in a fresh process (runner/checking.py), so a task module edited since the start is
    judged by what the new workers will run, not by the function the runner saw first."""
    module = tmp_path / "editedjobs.py"
    module.write_text("def greet(name):\n    return f'hi {name}'\n")
    config = write_config(tmp_path, redis_url, workers=1, tasks='greet: {path: "editedjobs:greet"}', http={"port": 0})
    config.write_text(config.read_text().replace("python_path: [", f'python_path: ["{tmp_path}", '))
    runner = Runner(pex, config, redis_url, tmp_path / "runner.log").start(expect_workers=1)
    try:
        enqueue = f"{http_url(runner)}/tasks/enqueue"
        assert call_json(enqueue, "POST", {"task": "greet", "args": ["a", "b"]})[0] == 400
        module.write_text("def greet(name, greeting):\n    return f'{greeting} {name}'\n")
        runner.signal(signal.SIGHUP)
        wait_for(lambda: any(m.startswith("reloaded ") for m in _messages(runner)), timeout=15, what="the reload")
        served = [m for m in _messages(runner) if m.startswith("HTTP on ")]  # port 0: a new port after a reload
        assert len(served) == 2
        enqueue = served[-1].removeprefix("HTTP on ") + "/tasks/enqueue"
        status, body = call_json(enqueue, "POST", {"task": "greet", "args": ["a"]})
        assert (status, body) == (
            400,
            {"error": "arguments do not match greet(name, greeting): missing a required argument: 'greeting'"},
        )
        status, body = call_json(enqueue, "POST", {"task": "greet", "args": ["you", "hello"]})
        assert status == 201, body
        assert Client(redis_url).result(body["id"], timeout=20) == "hello you"
    finally:
        runner.stop()


def _on_broker(redis_url: str, config: Path, action: Any) -> Any:
    """Run `action(broker)` on a Broker of that config, as the CLI's `reload` does."""

    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await action(Broker(client, config_mod.load(config, import_tasks=False)))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _registered(redis_url: str, config: Path) -> dict[str, dict[str, Any]]:
    """The runner registrations `reload` finds: id -> {host, pid, config, …}."""
    found: dict[str, dict[str, Any]] = _on_broker(redis_url, config, lambda broker: broker.runners())
    return found


def _id_of(runner: Runner) -> str:
    wait_for(
        lambda: any(int(i["pid"]) == runner.pid for i in _registered(runner.redis_url, runner.config).values()),
        timeout=15,
        what="the runner's registration",
    )
    found = _registered(runner.redis_url, runner.config)
    return next(runner_id for runner_id, info in found.items() if int(info["pid"]) == runner.pid)


def test_a_runner_killed_with_sigkill_is_unregistered_within_its_lease(
    pex: Path, tmp_path: Path, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url, workers=1, heartbeat="200ms")
    runner = Runner(pex, config, redis_url, tmp_path / "runner.log").start(expect_workers=1)
    runner_id = _id_of(runner)
    runner.kill_all()  # no unregistering: only its lease can end its registration
    lease_s = 0.2 * LEASE_HEARTBEATS
    wait_for(lambda: runner_id not in _registered(redis_url, config), timeout=lease_s + 1.0, what="its lease to end")
    wait_for(lambda: not store(redis_url).exists(Keys().runner(runner_id)), timeout=1.0, what="Redis to expire it")


def test_reload_signals_no_stranger_and_reloads_the_live_runner(pex: Path, tmp_path: Path, redis_url: str) -> None:
    """The pid of a dead runner's registration is reused by a `sleep`: `reload` must not touch it (a SIGHUP
    would kill it), yet reload the live runner of that config, and say which registration did not answer."""
    config = write_config(tmp_path, redis_url, workers=1)
    dead = Runner(pex, config, redis_url, tmp_path / "dead.log").start(expect_workers=1)
    dead_id = _id_of(dead)
    dead.kill_all()
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        info = {"config": str(config.resolve()), "pid": stranger.pid}  # as if left behind and still leased
        _on_broker(redis_url, config, lambda broker: broker.register_runner(dead_id, info, lease_s=300))
        live = Runner(pex, config, redis_url, tmp_path / "live.log").start(expect_workers=1)
        try:
            live_id = _id_of(live)
            result = pex_cmd(pex, config, "reload", redis_url=redis_url)
            wait_for(lambda: any(m.startswith("reloaded ") for m in _messages(live)), timeout=15, what="the reload")
            assert stranger.poll() is None, "reload signalled a process that is not a runner"
            assert f"runner {live_id} (pid {live.pid}): reloaded {config.resolve()}" in result.stdout
            assert f"runner {dead_id} (pid {stranger.pid}) did not take the request" in result.stderr
            assert result.returncode == 1
        finally:
            live.stop()
    finally:
        stranger.kill()
        stranger.wait()


def test_reload_prints_the_verdict_and_exits_2_when_the_file_is_rejected(runner: Runner, redis_url: str) -> None:
    good = runner.config.read_text()
    runner.config.write_text(good.replace("tasks:\n", "tasks:\n  broken: {path: 'nope.mod:fn'}\n", 1))
    result = pex_cmd(runner.pex, runner.config, "reload", redis_url=redis_url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    path = runner.config.resolve()
    assert f"reload rejected: 1 problem(s) in {path}; the running configuration stays" in result.stderr
    assert "tasks.broken.path: cannot import 'nope.mod:fn'" in result.stderr, result.stderr
    runner.config.write_text(good.replace("tasks:\n", "tasks:\n" + NEW_TASK, 1))
    result = pex_cmd(runner.pex, runner.config, "reload", redis_url=redis_url)
    assert result.returncode == 0, result.stderr
    assert f"reloaded {path}: tasks added: added_later" in result.stdout
    assert runner.alive()
