"""taskqueue.testing's own contract (SPEC §12): what drain() waits for (queues, due delayed tasks, limits' waiting
lists, in-flight tasks; job control: unique_for, rate_limit, cancel), its timeout, a given Redis left as it was,
one clear line for a setup problem, and the pytest fixture as a user's suite sees it (pytester)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskqueue import config as config_mod
from taskqueue.errors import TaskCancelled
from taskqueue.testing import DrainTimeout, TaskQueueTest, TaskQueueTestError, overrides
from taskqueue.testing.harness import DEFAULT_CONFIG
from tests.conftest import REPO

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

JOBS = """
import time
from pathlib import Path


def record(path: str, n: int) -> int:
    with open(path, "a") as out:
        out.write(f"{n}\\n")
    return n


def nap(seconds: float) -> float:
    time.sleep(seconds)  # a task that takes long: what drain()'s timeout is about
    return seconds
"""

CONFIG = """
redis: {url: "redis://127.0.0.1:1/0", key_prefix: app}   # replaced by the test's own Redis
tasks:
  record: {path: "helperjobs:record"}
  unique_record: {path: "helperjobs:record", unique_for: 1m}
  rated_record: {path: "helperjobs:record", rate_limit: 4/s}
  nap: {path: "helperjobs:nap", max_retries: 0}
workers: {initial_count: 3, shutdown_grace_period: 1s}
http: {enabled: true, port: 1}
schedules:
  often: {task: record, every: 1s, kwargs: {path: /dev/null, n: 0}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: its YAML and a module of tasks beside it."""
    (tmp_path / "helperjobs.py").write_text(JOBS)
    (tmp_path / DEFAULT_CONFIG).write_text(CONFIG)
    return tmp_path


@pytest.fixture
def tq(project: Path) -> Iterator[TaskQueueTest]:
    with TaskQueueTest(project / DEFAULT_CONFIG) as started:
        yield started


def lines(path: Path) -> list[int]:
    return sorted(int(n) for n in path.read_text().split()) if path.exists() else []


def test_drain_waits_for_a_rate_limits_waiting_list(tq: TaskQueueTest, project: Path) -> None:
    out = project / "out.txt"
    ids = [tq.enqueue("rated_record", str(out), n) for n in range(10)]  # 4/s: the last waits over a second
    started = time.monotonic()
    tq.drain(timeout=30)
    assert time.monotonic() - started > 1.0  # held back by the limit, not run at once
    assert [tq.result(i, timeout=0) for i in ids] == list(range(10))
    assert lines(out) == list(range(10))


def test_drain_waits_for_due_retries_and_delays_but_not_for_later_ones(tq: TaskQueueTest, project: Path) -> None:
    out = project / "out.txt"
    soon = tq.enqueue("record", str(out), 1, delay=0.5)
    later = tq.enqueue("record", str(out), 2, delay=300)
    tq.drain(timeout=10)
    assert tq.result(soon, timeout=0) == 1
    left = tq.pending()
    assert (left.empty, left.delayed) == (True, 1)  # the later one is still there, not waited for
    assert "1 delayed beyond the horizon" in left.describe()
    assert tq.client.status(later)["state"] == "delayed"  # type: ignore[index]


def test_unique_for_and_cancel_under_drain(tq: TaskQueueTest, project: Path) -> None:
    out = project / "out.txt"
    first = tq.enqueue("unique_record", str(out), 7)
    assert tq.enqueue("unique_record", str(out), 7) == first  # the same call while it is queued: not again
    cancelled = tq.enqueue("record", str(out), 8, delay=1)
    assert tq.client.cancel(cancelled) == "cancelled"
    tq.drain(timeout=10)  # the cancelled one came due and was dropped: nothing is left
    assert lines(out) == [7]
    with pytest.raises(TaskCancelled):
        tq.result(cancelled, timeout=0)
    assert tq.pending().empty and tq.dead() == []


def test_drain_times_out_saying_what_is_left(tq: TaskQueueTest) -> None:
    tq.enqueue("nap", 60)
    tq.enqueue("nap", 60)
    tq.enqueue("nap", 60)
    tq.enqueue("nap", 60, queue="low_priority")
    with pytest.raises(DrainTimeout, match=r"drain\(\) timed out after 1s: .*in flight") as raised:
        tq.drain(timeout=1)
    assert "the runner's log" in str(raised.value)


def test_the_test_decides_the_deployment_the_yaml_the_tasks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"REDIS_URL": "redis://127.0.0.1:1/0", "TASK_QUEUE_WORKERS": "5"}.items():
        monkeypatch.setenv(name, value)  # the user's shell: would override the file, not the test
    monkeypatch.setenv("TASK_QUEUE_SCHEDULER", "false")
    out = project / "out.txt"
    with TaskQueueTest(project / DEFAULT_CONFIG) as tq:
        tq.enqueue("record", str(out), 1, delay=0.1)  # runs: the timer is on
        tq.drain()
        assert lines(out) == [1]
        store = tq.client.redis
        assert tq.key_prefix == "app" and store.exists("app:tasks")  # the YAML's prefix on a private server
        assert store.zcard("app:workers") == 1  # workers=1, not the YAML's 3 nor $TASK_QUEUE_WORKERS
        with pytest.raises(ValueError, match="MessagePack cannot encode"):
            tq.enqueue("record", str(out), {1, 2})  # refused as in production, not pickled


def test_a_given_redis_is_left_as_it_was(project: Path, redis_url: str) -> None:
    other: Any = redis.Redis.from_url(redis_url)  # Any: redis-py's reply unions add nothing to a test
    other.set("someone:else", "keep me")
    before = set(other.keys("*"))
    out = project / "out.txt"
    with TaskQueueTest(project / DEFAULT_CONFIG, redis_url=redis_url) as tq:
        assert tq.key_prefix.startswith("app:test-")
        task_id = tq.enqueue("record", str(out), 5)
        tq.drain()
        assert tq.result(task_id, timeout=0) == 5
        added = set(other.keys("*")) - before
        assert added and all(k.decode().startswith(tq.key_prefix + ":") for k in added)
    assert set(other.keys("*")) == before  # never flushed; the test's own keys deleted
    other.delete("someone:else")
    other.close()


def test_setup_problems_are_one_clear_message(project: Path) -> None:
    with pytest.raises(TaskQueueTestError, match=r"^redis-server-nowhere not found on PATH: install Redis >= 6\.2"):
        TaskQueueTest(project / DEFAULT_CONFIG, redis_server="redis-server-nowhere").start()
    with pytest.raises(TaskQueueTestError, match=r"^no taskqueue configuration at .*missing\.yaml: pass its path"):
        TaskQueueTest(project / "missing.yaml").start()
    (project / "bad.yaml").write_text("tasks:\n  record: {path: helperjobs:record, queue: nowhere}\n")
    with pytest.raises(TaskQueueTestError, match=r"bad\.yaml:2:44: tasks\.record\.queue: unknown queue 'nowhere'"):
        TaskQueueTest(project / "bad.yaml").start()


def test_the_fixture_in_a_users_suite_shows_a_failed_tasks_traceback(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # .venv does not install taskqueue: the checkout
    monkeypatch.delenv("TASKQUEUE_TEST_REDIS_URL", raising=False)
    pytester.makeini(f"[pytest]\ntaskqueue_config = {REPO / DEFAULT_CONFIG}\n")
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            def test_ping(taskqueue_test):
                task_id = taskqueue_test.enqueue("ping", target="x")
                taskqueue_test.drain()
                assert taskqueue_test.result(task_id) == "pong from x"

            def test_broken(taskqueue_test):
                taskqueue_test.enqueue("flaky", fail_times=99)
                taskqueue_test.drain(timeout=30)
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "taskqueue.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*TaskQueueTestFailure: 1 task(s) were dead-lettered*",
            "*task 'flaky' (id *, queue default, 4 attempt(s)): RuntimeError: transient failure on attempt 4",
            "*Traceback (most recent call last):",
            '*File "*/jobs/email.py", line *, in flaky',
            "*RuntimeError: transient failure on attempt 4",
        ]
    )


def test_the_fixture_says_what_to_install_when_redis_server_is_missing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PATH", str(pytester.path / "bin"))  # no redis-server here
    monkeypatch.setenv("TASKQUEUE_TEST_CONFIG", str(REPO / DEFAULT_CONFIG))
    monkeypatch.delenv("TASKQUEUE_TEST_REDIS_URL", raising=False)
    pytester.makepyfile(test_user="def test_it(taskqueue_test):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "taskqueue.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["taskqueue_test: redis-server not found on PATH: install Redis >= 6.2 (Debian/Ubuntu: *"]
    )
    assert "Traceback" not in result.stdout.str()


def test_the_fixture_finds_no_yaml_in_an_empty_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user="def test_it(taskqueue_test):\n    pass\n")
    monkeypatch.delenv("TASKQUEUE_TEST_CONFIG", raising=False)
    result = pytester.runpytest_inprocess("-p", "taskqueue.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*taskqueue_test: no taskqueue configuration at {pytester.path}/task-queue.yaml*"])


def test_a_producer_imports_neither_the_helper_nor_pytest() -> None:
    probe = (
        "import sys, taskqueue.client; print(sorted(m for m in ('pytest', 'taskqueue.testing') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert found.stdout.strip() == "[]"


def test_the_runners_yaml_is_the_users_with_the_deployment_replaced(project: Path) -> None:
    path = project / DEFAULT_CONFIG
    block = "workers:\n  initial_count: 3\n  max_concurrent_tasks: ${SLOTS:-4}\n"  # a plain ${…}: typed as a number
    path.write_text(CONFIG.replace("workers: {initial_count: 3, shutdown_grace_period: 1s}\n", block))
    derived = overrides.runner_config(
        path.read_text(), redis_url="redis://127.0.0.1:7/0", key_prefix="app:t", workers=2, schedules=False
    )
    cfg = config_mod.load(path, {}, raw=derived, import_tasks=False)  # the runner's view of it
    assert (cfg.redis.url, cfg.redis.key_prefix, cfg.redis.embedded) == ("redis://127.0.0.1:7/0", "app:t", False)
    assert (cfg.workers.initial_count, cfg.workers.max_concurrent_tasks) == (2, 4)  # ${SLOTS:-4} still expands
    assert (cfg.autoscaler.enabled, cfg.http.enabled, cfg.scheduler.enabled, cfg.schedules) == (False, False, True, ())
    assert set(cfg.tasks) == {"record", "unique_record", "rated_record", "nap"}
    assert cfg.tasks["rated_record"].limits is not None and cfg.tasks["unique_record"].unique_for_s == 60
    with_schedules = overrides.runner_config(
        path.read_text(), redis_url="redis://127.0.0.1:7/0", key_prefix="app", workers=1, schedules=True
    )
    assert [s.name for s in config_mod.load(path, {}, raw=with_schedules, import_tasks=False).schedules] == ["often"]
