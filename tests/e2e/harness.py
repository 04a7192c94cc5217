"""Drive the built PEX like a user: write a YAML, start the runner as a subprocess, kill it, read Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from tests.conftest import wait_for

HERE = Path(__file__).resolve().parent

BASE_TASKS = """
  record: {path: testjobs.tasks:record}
  arecord: {path: testjobs.tasks:arecord, queue: high_priority}
  recorder: {path: testjobs.tasks:Recorder}
  echo: {path: testjobs.tasks:echo}
  order: {path: testjobs.tasks:order}
  always_fails:
    {path: testjobs.tasks:always_fails, max_retries: 2, retry_backoff: {base: 200ms, max: 5s, jitter: false}}
  retry_once: {path: testjobs.tasks:retry_once}
  reject: {path: testjobs.tasks:reject}
  sleep_sync: {path: testjobs.tasks:sleep_sync, timeout: 500ms, max_retries: 0}
  sleep_async: {path: testjobs.tasks:sleep_async, timeout: 500ms, max_retries: 0}
  slow_once: {path: testjobs.tasks:slow_once}
  fire_log: {path: testjobs.tasks:fire_log}
  sleep_long: {path: testjobs.tasks:sleep_sync, timeout: 5m}
  add: {path: testjobs.tasks:add}
  total: {path: testjobs.tasks:total}
  flaky: {path: testjobs.tasks:flaky, max_retries: 0}
  gated: {path: testjobs.tasks:gated}
  agated: {path: testjobs.tasks:agated}
  interpreter: {path: testjobs.tasks:interpreter}
"""


def write_config(
    folder: Path,
    redis_url: str,
    *,
    workers: int = 2,
    slots: int = 10,
    grace: str = "5s",
    heartbeat: str = "500ms",
    autoscaler: str = "{enabled: false}",
    extra: str = "",
    http: Mapping[str, object] | None = None,
    tasks: str = "",
    worker_options: str = "",
) -> Path:
    """A runner config for the test tasks; `extra` is appended YAML (top-level sections); `http` (keys of the
    `http:` section) turns the HTTP server on, e.g. `http={"port": 0}` for any free port; `tasks` adds entries
    to `tasks:` (each line indented by two spaces); `worker_options` adds keys to the `workers:` mapping, e.g.
    "max_tasks_per_child: 100"."""
    text = (
        f'redis: {{url: "{redis_url}"}}\n'
        f'python_path: ["{HERE}"]\n'
        f"tasks:{BASE_TASKS}{textwrap.indent(textwrap.dedent(tasks).strip(), '  ')}\n"
        f"workers: {{initial_count: {workers}, max_concurrent_tasks: {slots}, heartbeat_interval: {heartbeat}, "
        f"shutdown_grace_period: {grace}{', ' + worker_options if worker_options else ''}}}\n"
        f"autoscaler: {autoscaler}\n"
        "scheduler: {tick_interval: 200ms}\n"
        f"http: {json.dumps({'enabled': True, **http}) if http is not None else '{enabled: false}'}\n"
    ) + textwrap.dedent(extra)
    path = folder / "task-queue.yaml"
    path.write_text(text)
    return path


class Runner:
    """One `taskqueue.pex run` subprocess and its worker processes; `python` runs the pex with that interpreter
    (`python3.13 taskqueue.pex …`) instead of its own shebang."""

    def __init__(
        self,
        pex: Path,
        config: Path,
        redis_url: str,
        log: Path,
        command: str = "run",
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.pex, self.config, self.redis_url, self.log, self.command = pex, config, redis_url, log, command
        self.args, self.env = tuple(args), dict(env or {})  # more command-line options; more environment
        self.argv = [python, str(pex)] if python else [str(pex)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, expect_workers: int | None = None) -> Runner:
        env = {**os.environ, "TEST_REDIS_URL": self.redis_url, **self.env}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.argv, "-c", str(self.config), self.command, "--log-format", "json", *self.args],
                stdout=out,
                stderr=out,
                env=env,
                cwd=self.config.parent,
                start_new_session=True,
            )
        if expect_workers:
            wait_for(lambda: len(self.worker_pids()) >= expect_workers, timeout=20, what="worker processes")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """Worker processes of this runner that have registered in Redis."""
        if not self.alive():
            return []
        children = _children(self.pid)
        live = {int(w.get("pid", 0)) for w in live_workers(self.redis_url)}
        return sorted(int(c) for c in children if int(c) in live)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the runner and every worker process at once (a crashed host)."""
        pids = _children(self.pid)
        for pid in [self.pid, *map(int, pids)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_all()

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"msg": line})
        return lines


def _children(pid: int) -> list[str]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return found.stdout.split()


def store(redis_url: str) -> Any:
    """A plain client for assertions (typed Any: redis-py's reply unions add nothing to a test)."""
    return redis.Redis.from_url(redis_url)


def live_workers(redis_url: str, prefix: str = "tq") -> list[dict[str, str]]:
    client = store(redis_url)
    try:
        client.ping()
    except redis.RedisError:
        return []  # not up yet (a runner starting its own Redis)
    ids = client.zrangebyscore(f"{prefix}:workers", int(time.time() * 1000), "+inf")
    found = []
    for wid in ids:
        info = client.hgetall(f"{prefix}:worker:{wid.decode()}")
        found.append({k.decode(): v.decode() for k, v in info.items()})
    return found


def runs(redis_url: str) -> dict[int, int]:
    """Item n → how many times it ran."""
    found = store(redis_url).hgetall("test:runs")
    return {int(k): int(v) for k, v in found.items()}


def pex_cmd(
    pex: Path, config: Path, *args: str, redis_url: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_REDIS_URL": redis_url}
    return subprocess.run(
        [str(pex), "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=config.parent,
        check=False,
    )


def lpush_cli(port: int, key: str, values: Sequence[bytes]) -> None:
    """Enqueue with the real redis-cli (`-x` reads the last argument from stdin: arbitrary bytes)."""
    for value in values:
        subprocess.run(
            ["redis-cli", "-p", str(port), "-x", "LPUSH", key],
            input=value,
            check=True,
            capture_output=True,
            timeout=10,
        )


RunnerFactory = Callable[..., Runner]
