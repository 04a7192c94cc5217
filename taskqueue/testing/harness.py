"""TaskQueueTest: the real runner for a user's own test suite (SPEC §12) — a private redis-server (or a given
Redis, under a key prefix of its own), the user's YAML, `taskqueue run`'s own Runner and worker processes,
and what a test needs around them: the client, drain(), the dead letters with their tracebacks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import redis

import taskqueue
from taskqueue import config as config_mod
from taskqueue.client import Client
from taskqueue.errors import ConfigError, TaskCancelled, TaskFailed
from taskqueue.runner.children import worker_flags
from taskqueue.store.broker import HOST, DeadRecord
from taskqueue.store.pending import Pending, PendingReader
from taskqueue.testing import overrides
from taskqueue.testing.errors import DrainTimeout, TaskQueueTestError, TaskQueueTestFailure
from taskqueue.testing.redis_server import PrivateRedis

DEFAULT_CONFIG = "task-queue.yaml"
LOG_TAIL_LINES = 15  # of the runner's log, in a message about a runner that failed or a drain that timed out
_POLL_S = (0.005, 0.05)  # drain(): first and longest pause between two looks
_PREFIX_MAX = 64  # the schema's bound on redis.key_prefix


@dataclass(frozen=True, slots=True)
class DeadTask:
    """One dead-lettered task: what `taskqueue dead list --json` shows of it."""

    id: str
    task: str
    queue: str
    error: str
    traceback: str
    attempts: int

    def describe(self) -> str:
        """Its id, task, error and (indented) traceback, for a failure message."""
        head = f"task {self.task!r} (id {self.id}, queue {self.queue}, {self.attempts} attempt(s)): {self.error}"
        trace = self.traceback.rstrip() or "(no traceback: it did not raise — rejected, refused, timed out or lost)"
        return f"{head}\n{textwrap.indent(trace, '    ')}"


def _dead_task(record: DeadRecord) -> DeadTask:
    return DeadTask(record.id, record.task, record.queue, record.error, record.traceback or "", record.attempts or 0)


def dead_message(dead: list[DeadTask]) -> str:
    found = "\n\n".join(d.describe() for d in dead)
    return f"{len(dead)} task(s) were dead-lettered (expected? drain(raise_on_dead=False), then .dead()):\n\n{found}"


class TaskQueueTest:
    """A real taskqueue deployment for one test (or a block of tests):

        with TaskQueueTest("task-queue.yaml") as tq:
            task_id = tq.enqueue("send_email", to="a@example.com")
            tq.drain()
            assert tq.result(task_id) == {...}

    `config` is the user's YAML, used as written for everything about the tasks (queues, retries, timeouts,
    limits, workflows); the test decides the deployment: `redis_url` (default: a private redis-server on a
    free port, stopped at the end; a given Redis is never flushed — the test uses a key prefix of its own and
    deletes only those keys), `workers` processes, no autoscaler, no HTTP, no periodic `schedules` unless
    asked. `env` adds environment variables for the runner and its workers; `folder` keeps the runner's log
    (and the private Redis' files) there instead of in a temporary folder removed at stop()."""

    def __init__(
        self,
        config: str | os.PathLike[str] = DEFAULT_CONFIG,
        *,
        redis_url: str | None = None,
        workers: int = 1,
        schedules: bool = False,
        env: Mapping[str, str] | None = None,
        folder: str | os.PathLike[str] | None = None,
        redis_server: str = "redis-server",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        log_level: str = "info",
    ) -> None:
        self.config_path = Path(config).resolve()
        self.workers = workers
        self.schedules = schedules
        self.env = dict(env or {})
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.log_level = log_level
        self.redis_url = redis_url or ""  # the private server's once started
        self.key_prefix = ""
        self.config: config_mod.Config | None = None
        self._given_url = redis_url
        self._given_folder = Path(folder) if folder is not None else None
        self._redis_binary = redis_server
        self._folder: Path | None = None
        self._redis: PrivateRedis | None = None
        self._client: Client | None = None
        self._pending: PendingReader | None = None
        self._runner: subprocess.Popen[bytes] | None = None
        self._reported: set[str] = set()  # dead tasks a drain() or result() already raised for

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        """Start Redis (unless given) and the runner; return once its worker processes have registered."""
        if self._runner is not None:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        text = self._load()
        assert self.config is not None
        self._folder = self._given_folder or Path(tempfile.mkdtemp(prefix="taskqueue-test-"))
        self._folder.mkdir(parents=True, exist_ok=True)
        if self._given_url:
            self.key_prefix = f"{self.config.redis.key_prefix[: _PREFIX_MAX - 16]}:test-{uuid.uuid4().hex[:10]}"
        else:
            self._redis = PrivateRedis(self._folder / "redis", self._redis_binary)
            self._redis.start()
            self.redis_url, self.key_prefix = self._redis.url, self.config.redis.key_prefix
        raw = overrides.runner_config(
            text, redis_url=self.redis_url, key_prefix=self.key_prefix, workers=self.workers, schedules=self.schedules
        )
        self._client = Client(self.redis_url, key_prefix=self.key_prefix)
        self._pending = PendingReader(self._client.redis, self._client.keys, [q.name for q in self.config.queues])
        self._spawn(raw)
        self._wait_ready()

    def _load(self) -> str:
        """The user's YAML, checked as `taskqueue validate` checks it (imports included), with its problems
        located in that file; returns its text."""
        path = self.config_path
        if not path.is_file():
            raise TaskQueueTestError(
                f"no taskqueue configuration at {path}: pass its path (TaskQueueTest('path/to/task-queue.yaml'); "
                "for the pytest fixture: --taskqueue-config, $TASKQUEUE_TEST_CONFIG or the ini option "
                "taskqueue_config)"
            )
        raw = config_mod.read(path)
        try:
            self.config = config_mod.load(path, raw=raw)
        except ConfigError as exc:
            listed = "\n".join(exc.problems)
            raise TaskQueueTestError(f"{path}: {len(exc.problems)} problem(s), not started:\n{listed}") from None
        return raw.decode("utf-8")

    def _spawn(self, raw: bytes) -> None:
        assert self._folder is not None
        env = {k: v for k, v in os.environ.items() if k not in overrides.DECIDED_BY_THE_TEST}
        env.update(self.env)
        if not sys.flags.ignore_environment:  # as the runner does for its workers: taskqueue from where we have it
            env["PYTHONPATH"] = str(Path(taskqueue.__file__).resolve().parent.parent)
        argv = [sys.executable, *worker_flags(), "-m", "taskqueue.testing.serve", "-c", str(self.config_path)]
        argv += ["--log-level", self.log_level]
        if self._redis is not None:
            argv += ["--private-redis", self.redis_url]
        with self.log_path.open("wb") as log:
            self._runner = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.config_path.parent,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the test, which stops the runner
            )
        stdin: IO[bytes] | None = self._runner.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):  # a runner that died at once: _wait_ready() shows its output
            stdin.write(b"%d\n" % len(raw) + raw)
            stdin.flush()  # stdin stays open: serve.py stops the runner when it closes

    def _wait_ready(self) -> None:
        keys = self.client.keys
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_runner("while starting")
            try:
                pipe = self.client.redis.pipeline(transaction=False)
                pipe.exists(keys.tasks)
                pipe.zcard(keys.workers)
                published, registered = pipe.execute()
            except redis.RedisError:
                published, registered = 0, 0
            if published and registered >= self.workers:
                return
            if time.monotonic() >= deadline:
                raise TaskQueueTestError(
                    f"the runner did not start {self.workers} worker process(es) within {self.start_timeout:g}s"
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the runner (SIGTERM; SIGKILL for it and its workers after `stop_timeout`) and the private Redis;
        with a given Redis, delete the keys under the test's prefix. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stop_runner(runner)
        client, self._client = self._client, None
        if client is not None:
            if self._given_url:
                with contextlib.suppress(redis.RedisError):
                    self._drop_keys(client)
            client.close()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._folder is not None and self._given_folder is None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None

    def _stop_runner(self, runner: subprocess.Popen[bytes]) -> None:
        workers = self._worker_pids(runner.pid)
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
            try:
                runner.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                for pid in (runner.pid, *workers):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                runner.wait(10)
        if runner.stdin is not None:
            with contextlib.suppress(OSError):
                runner.stdin.close()

    def _worker_pids(self, runner_pid: int) -> list[int]:
        """This runner's worker processes, as they registered in Redis (for the last resort: SIGKILL)."""
        if self._client is None:
            return []
        found = []
        with contextlib.suppress(redis.RedisError):
            r, keys = self._client.redis, self._client.keys
            for worker_id in r.zrange(keys.workers, 0, -1):
                info = r.hgetall(keys.worker(worker_id.decode()))
                if info.get(b"host", b"").decode() == HOST and info.get(b"runner_pid") == str(runner_pid).encode():
                    found.append(int(info[b"pid"]))
        return found

    def _drop_keys(self, client: Client) -> None:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix) + ":*"
        batch: list[bytes] = []
        for key in client.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.redis.delete(*batch)
                batch = []
        if batch:
            client.redis.delete(*batch)

    # ---- what a test uses ----------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """A taskqueue.client.Client bound to this deployment (its Redis and key prefix)."""
        if self._client is None:
            raise TaskQueueTestError("this TaskQueueTest is not started: `with TaskQueueTest(...) as tq:` or start()")
        return self._client

    @property
    def log_path(self) -> Path:
        """The runner's and its workers' log (text)."""
        if self._folder is None:
            raise TaskQueueTestError("this TaskQueueTest is not started: it has no log yet")
        return self._folder / "runner.log"

    def runner_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def enqueue(self, task: str, *args: Any, **kwargs: Any) -> str:
        """`client.enqueue(...)`: the same keywords (queue, delay, task_id, unique_key), the same errors."""
        return self.client.enqueue(task, *args, **kwargs)

    def pending(self, horizon: float = 0.0) -> Pending:
        """What is left to do now: ready, delayed and due within `horizon` seconds, waiting on a limit, running."""
        if self._pending is None:
            raise TaskQueueTestError("this TaskQueueTest is not started")
        return self._pending.read(int(horizon * 1000))

    def drain(self, timeout: float = 10.0, *, raise_on_dead: bool = True) -> None:
        """Wait until nothing is ready in any queue, no delayed task (delay or retry) comes due before the
        deadline, nothing waits on a rate or concurrency limit and nothing is in flight; a delayed task due
        later is left where it is (see pending()). Raises DrainTimeout (saying what is left) after `timeout`
        seconds; then, with `raise_on_dead`, TaskQueueTestFailure naming every task dead-lettered since the
        last drain() — its id, task, error and traceback (raise_on_dead=False: expected, see dead())."""
        __tracebackhide__ = True  # pytest: the failure is the task's, not this frame's
        deadline = time.monotonic() + timeout
        pause = _POLL_S[0]
        while not (left := self.pending(max(0.0, deadline - time.monotonic()))).empty:
            self._check_runner("during drain()")
            if time.monotonic() >= deadline:
                raise DrainTimeout(f"drain() timed out after {timeout:g}s: {left.describe()}{self._log_tail()}")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_S[1])
        fresh = [d for d in self.dead() if d.id not in self._reported]
        self._reported.update(d.id for d in fresh)  # raised for now, or expected (raise_on_dead=False)
        if fresh and raise_on_dead:
            raise TaskQueueTestFailure(dead_message(fresh))

    def dead(self) -> list[DeadTask]:
        """Every dead-lettered task, oldest first."""
        keys, r = self.client.keys, self.client.redis
        ids = r.zrange(keys.dead_index, 0, -1)
        found = r.hmget(keys.dead, ids) if ids else []
        return [_dead_task(DeadRecord.decode(raw)) for raw in found if raw is not None]

    def result(self, task_id: str, timeout: float = 10.0) -> Any:
        """The task's result (waiting up to `timeout` seconds); a dead-lettered task raises TaskQueueTestFailure
        with its traceback (a cancelled one TaskCancelled, none in time ResultTimeout)."""
        __tracebackhide__ = True
        try:
            return self.client.result(task_id, timeout=timeout)
        except TaskCancelled:
            raise
        except TaskFailed:
            raw = self.client.redis.hget(self.client.keys.dead, task_id)
            if raw is None:
                raise
            self._reported.add(task_id)
            raise TaskQueueTestFailure(dead_message([_dead_task(DeadRecord.decode(raw))])) from None

    # ---- helpers -------------------------------------------------------------------------------
    def _check_runner(self, doing: str) -> None:
        runner = self._runner
        if runner is None:
            raise TaskQueueTestError("this TaskQueueTest is not started")
        code = runner.poll()
        if code is not None:
            raise TaskQueueTestError(f"the taskqueue runner exited (code {code}) {doing}{self._log_tail(40)}")

    def _log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.runner_log().rstrip().splitlines()[-lines:]
        if not text:
            return ""
        return f"\nthe runner's log ({self.log_path}) ends:\n" + textwrap.indent("\n".join(text), "    ")
