"""The runner as a user meets it: first run without Redis, an unreachable Redis, the worker-only
command, the asyncio client and delayed tasks."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import msgpack
import pytest
import redis

from taskqueue.client import AsyncClient, Client
from tests.conftest import free_port, wait_for
from tests.e2e.harness import Runner, RunnerFactory, pex_cmd, runs, store, write_config
from tests.e2e.test_http import http_url
from tests.servers import call_json


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_first_run_starts_a_private_redis_and_stops_it(make_runner: RunnerFactory, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    runner = make_runner(url, workers=1, extra="")
    runner.config.write_text(
        runner.config.read_text().replace(
            f'redis: {{url: "{url}"}}', f'redis: {{url: "{url}", embedded: {{enabled: true}}}}'
        )
    )
    runner.start(expect_workers=1)
    assert _answers(url)
    assert (runner.config.parent / ".taskqueue" / "redis").is_dir()  # its AOF lives next to the YAML
    Client(url).enqueue("record", 1)
    wait_for(lambda: runs(url) == {1: 1}, timeout=20, what="a task on the private Redis")
    assert any("started a private redis-server" in line.get("msg", "") for line in runner.logs())
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    wait_for(lambda: not _answers(url), timeout=10, what="the private Redis to stop with the runner")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@127.0.0.1:{port}/0", "redis://user:***@127.0.0.1:{port}/0"),
        ("redis://:s3cret@127.0.0.1:{port}/0", "redis://:***@127.0.0.1:{port}/0"),
        ("redis://127.0.0.1:{port}/0?password=s3cret", "redis://127.0.0.1:{port}/0?password=***"),
        ("unix://{tmp}/none.sock?db=0&password=s3cret", "unix://{tmp}/none.sock?db=0&password=***"),
    ],
    ids=["user-password", "password-only", "query", "unix-query"],
)
@pytest.mark.parametrize("command", ["run", "status"])
def test_unreachable_redis_is_one_clear_line_without_the_password(
    pex: Path, tmp_path: Path, url: str, shown: str, command: str
) -> None:
    port = free_port()
    url, shown = (text.format(port=port, tmp=tmp_path) for text in (url, shown))
    config = write_config(tmp_path, url)
    result = pex_cmd(pex, config, command, *(["--fail-fast"] if command == "run" else []), redis_url=url)
    assert result.returncode == 1
    assert f"cannot reach Redis at {shown}" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_worker_command_runs_tasks_and_async_client_gets_results(pex: Path, tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url, workers=1)
    runner = Runner(pex, config, redis_url, tmp_path / "worker.log")
    runner.start(expect_workers=1)  # `run` once, to publish the task table for the client
    runner.stop()
    worker = Runner(pex, config, redis_url, tmp_path / "worker2.log", command="worker")
    try:
        worker.start(expect_workers=1)

        async def produce() -> list[object]:
            client = AsyncClient(redis_url)
            ids = await client.enqueue_many([("record", (n,), {}) for n in range(3)])
            one = await client.enqueue("echo", 1, k="v")
            results = [await client.result(i, timeout=10) for i in [*ids, one]]
            await client.aclose()
            return results

        results = asyncio.run(produce())
        assert results[:3] == [0, 1, 2]
        assert results[3] == {"args": [1], "kwargs": {"k": "v"}, "task": "echo", "queue": "default", "attempt": 1}
    finally:
        worker.stop()


def test_delayed_task_waits_then_runs(make_runner: RunnerFactory, redis_url: str) -> None:
    make_runner(redis_url, workers=1).start(expect_workers=1)
    client = Client(redis_url)
    due = time.time() + 1.0
    task_id = client.enqueue("echo", "later", delay=1.0)
    db = store(redis_url)
    assert db.zcard("tq:delayed") == 1
    assert db.get(f"tq:result:{task_id}") is None
    assert client.result(task_id, timeout=10)["args"] == ["later"]
    finished = msgpack.unpackb(db.get(f"tq:result:{task_id}"))["finished_at"]
    assert due <= finished < due + 1.0  # not early; promptly once due (the timer is woken, not polling)
    assert db.zcard("tq:delayed") == 0


def test_workers_never_import_from_the_launch_directory(make_runner: RunnerFactory, redis_url: str) -> None:
    """A `signal.py` and a `taskqueue/` package beside the YAML (the runner's working directory, and on
    `python_path` too) must not replace the standard library's module or the PEX's own code in the workers."""
    runner = make_runner(redis_url, workers=2)
    folder = runner.config.parent
    (folder / "signal.py").write_text("raise SystemExit('the launch directory was imported: signal.py')\n")
    (folder / "taskqueue").mkdir()
    (folder / "taskqueue" / "__init__.py").write_text("raise SystemExit('the launch directory was imported')\n")
    text = runner.config.read_text()
    runner.config.write_text(text.replace("python_path: [", f'python_path: ["{folder}", ', 1))
    runner.start(expect_workers=2)
    Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(20)])
    wait_for(lambda: len(runs(redis_url)) == 20, timeout=20, what="tasks run by workers started beside them")
    assert not [line for line in runner.logs() if "exited unexpectedly" in str(line.get("msg"))]


def test_workers_load_no_yaml_schema_scheduler_or_http(make_runner: RunnerFactory, redis_url: str) -> None:
    """The runner hands its workers the configuration it checked (config.load_checked), so a worker loads neither
    the YAML parser nor the JSON Schema; APScheduler and aiohttp only where they are configured: not in a
    worker, nor in a runner without HTTP, webhooks or schedules (start-up time and memory, PERFORMANCE.md)."""
    heavy = ["yaml", "jsonschema", "referencing", "apscheduler", "tzlocal", "aiohttp", "prometheus_client"]
    runner = make_runner(redis_url, workers=1, tasks="loaded: {path: testjobs.tasks:loaded}")
    runner.start(expect_workers=1)
    (worker,) = runner.worker_pids()
    assert b"--checked" in Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    client = Client(redis_url)
    assert client.result(client.enqueue("loaded", heavy), timeout=20) == []
    # The runner's modules, seen from outside: aiohttp's compiled parser is mapped once aiohttp is imported.
    assert "/aiohttp/" not in Path(f"/proc/{runner.pid}/maps").read_text()
    assert not [line for line in runner.logs() if line.get("level") in ("error", "critical")]


def test_a_configuration_json_cannot_carry_reaches_the_workers_as_yaml(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    """A value only YAML can hold (bytes, here in a schedule's kwargs) has no checked form: the workers get the
    YAML and check it again, as before, and run tasks alike."""
    extra = "schedules:\n  odd: {task: echo, every: 1h, enabled: false, kwargs: {n: 1, blob: !!binary aGVsbG8=}}\n"
    runner = make_runner(redis_url, workers=1, extra=extra)
    runner.start(expect_workers=1)
    (worker,) = runner.worker_pids()
    assert b"--checked" not in Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(5)])
    wait_for(lambda: runs(redis_url) == dict.fromkeys(range(5), 1), timeout=20, what="tasks run by a worker given YAML")


def test_exit_codes_follow_the_readme(make_runner: RunnerFactory, redis_url: str) -> None:
    """SIGINT (Ctrl-C) stops the runner gracefully with 130, SIGTERM with 0; an unknown task named on the
    command line is a usage error (2)."""
    runner = make_runner(redis_url, workers=1)
    typo = pex_cmd(runner.pex, runner.config, "enqueue", "recrod", redis_url=redis_url)
    assert typo.returncode == 2, typo.stderr
    assert typo.stderr.startswith("taskqueue: unknown task 'recrod' (did you mean 'record'? declared: "), typo.stderr
    runner.start(expect_workers=1)
    runner.signal(signal.SIGINT)
    assert runner.wait(30) == 130
    runner.start(expect_workers=1)
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0


RECORDS_IMPORTS = """
import os
from pathlib import Path

with (Path(__file__).parent / "imported-by.txt").open("a") as out:
    out.write(f"{os.getpid()}\\n")


def hello(name: str) -> str:
    return f"hello {name}"
"""


def test_the_runner_never_imports_the_users_code_nor_the_yaml_reader_and_schema(
    pex: Path, tmp_path: Path, redis_url: str
) -> None:
    """A job module may import half of PyPI: only the workers (and the runner's throw-away checking process, at
    start and at each reload) import it. The runner still refuses an enqueue whose arguments cannot bind."""
    (tmp_path / "heavyjobs.py").write_text(RECORDS_IMPORTS)
    config = write_config(tmp_path, redis_url, workers=1, tasks='hello: {path: "heavyjobs:hello"}', http={"port": 0})
    config.write_text(config.read_text().replace("python_path: [", f'python_path: ["{tmp_path}", '))
    runner = Runner(pex, config, redis_url, tmp_path / "runner.log").start(expect_workers=1)
    try:
        [worker] = runner.worker_pids()
        importers = {int(pid) for pid in (tmp_path / "imported-by.txt").read_text().split()}
        assert worker in importers
        assert runner.pid not in importers
        assert len(importers) == 2  # the worker and the checking process
        maps = Path(f"/proc/{runner.pid}/maps").read_text()
        assert "/yaml/_yaml." not in maps and "/rpds/rpds." not in maps  # PyYAML's and jsonschema's native parts
        enqueue = f"{http_url(runner)}/tasks/enqueue"
        status, body = call_json(enqueue, "POST", {"task": "hello", "args": [1, 2]})
        assert (status, body) == (400, {"error": "arguments do not match hello(name): too many positional arguments"})
        status, body = call_json(enqueue, "POST", {"task": "hello", "args": ["you"]})
        assert status == 201, body
        assert Client(redis_url).result(body["id"], timeout=20) == "hello you"
    finally:
        runner.stop()
