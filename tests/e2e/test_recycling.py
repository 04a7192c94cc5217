"""Worker processes recycled through the built PEX (issue 15): `workers.max_tasks_per_child` and
`workers.max_memory_per_child` retire a worker as a scale-down does, and the runner replaces it at once.
Every task runs exactly once, nothing is lost or recovered as an orphan, and the retirements are counted."""

from __future__ import annotations

from typing import Any

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs, store
from tests.e2e.test_http import http_url, metric_values

RETIREMENTS = "taskqueue_worker_retirements_total"
TASKS = """
record_pid: {path: testjobs.tasks:record_pid}
hog: {path: testjobs.tasks:hog}
"""


def _per_pid(db: Any) -> dict[int, int]:
    """Worker pid → tasks it ran (recorded by the task bodies)."""
    return {int(pid): int(n) for pid, n in db.hgetall("test:pids").items()}


def _retiring_lines(runner: Runner, reason: str) -> list[dict[str, Any]]:
    return [line for line in runner.logs() if f"retiring ({reason})" in str(line.get("msg", ""))]


def _check_nothing_lost(db: Any, runner: Runner, count: int) -> None:
    done = runs(runner.redis_url)
    assert set(done) == set(range(count)), f"{count - len(done)} task(s) never ran"
    assert [n for n, times in done.items() if times != 1] == [], "tasks that ran more than once"
    assert int(db.hget("tq:stats", "orphaned_recovered") or 0) == 0
    assert [k for k in db.hkeys("tq:stats") if k.startswith(b"failed:")] == []  # no attempt failed, none retried
    assert db.zcard("tq:dead:index") == 0
    unexpected = [x for x in runner.logs() if "exited unexpectedly" in str(x.get("msg", ""))]
    assert unexpected == [], unexpected
    wait_for(lambda: len(runner.worker_pids()) == 2, timeout=20, what="two live worker processes again")


def test_max_tasks_per_child_replaces_workers_and_runs_every_task_exactly_once(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    n, limit = 1000, 100
    runner = make_runner(
        redis_url,
        workers=2,
        slots=10,
        http={"port": 0},
        tasks=TASKS,
        worker_options=f"max_tasks_per_child: {limit}",
    ).start(expect_workers=2)
    base = http_url(runner)
    db = store(redis_url)
    Client(redis_url).enqueue_many([("record_pid", (i,), {}) for i in range(n)])
    wait_for(lambda: len(runs(redis_url)) == n, timeout=120, what=f"all {n} tasks to run")

    per_pid = _per_pid(db)
    full = sum(1 for ran in per_pid.values() if ran == limit)  # processes that spent their whole budget
    # every one of them retires (and is counted in retire.lua) once its last task is acknowledged
    wait_for(
        lambda: int(db.hget("tq:stats", "retirements:max_tasks") or 0) == full,
        timeout=20,
        what=f"{full} retirements counted",
    )
    print(f"\n{n} tasks over {len(per_pid)} worker processes, {full} retired: {sorted(per_pid.values())}")
    _check_nothing_lost(db, runner, n)
    assert sum(per_pid.values()) == n
    assert max(per_pid.values()) <= limit  # a worker never takes more than its budget
    # 1,000 tasks, at most 100 per process, and the two live ones at the end hold fewer than 200 between them
    assert len(per_pid) >= 10
    assert full >= 9
    lines = _retiring_lines(runner, "max_tasks")
    assert len(lines) == full
    assert all(line.get("worker") and f"{limit} task(s) done" in line["msg"] for line in lines), lines
    assert len({line["worker"] for line in lines}) == full
    assert metric_values(base, RETIREMENTS) == {(("reason", "max_tasks"),): full, (("reason", "max_memory"),): 0}


def test_max_memory_per_child_replaces_a_leaking_worker_and_loses_nothing(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    """Each task keeps 4 MiB alive for good; a worker starts near 40 MiB, so it passes 96 MiB after some 15
    tasks, notices on its next heartbeat and retires while a task runs: that task finishes, nothing is lost."""
    n = 150
    runner = make_runner(
        redis_url, workers=2, slots=1, heartbeat="250ms", tasks=TASKS, worker_options="max_memory_per_child: 96MiB"
    ).start(expect_workers=2)
    db = store(redis_url)
    Client(redis_url).enqueue_many([("hog", (i, 4, 0.02), {}) for i in range(n)])
    wait_for(lambda: len(runs(redis_url)) == n, timeout=120, what=f"all {n} tasks to run")
    lines: list[dict[str, Any]] = []

    def counted() -> bool:
        lines[:] = _retiring_lines(runner, "max_memory")
        return int(db.hget("tq:stats", "retirements:max_memory") or 0) == len(lines) >= 2

    wait_for(counted, timeout=20, what="at least two memory retirements, each counted")
    per_pid = _per_pid(db)
    print(f"\n{n} tasks over {len(per_pid)} worker processes, {len(lines)} retired: {sorted(per_pid.values())}")
    _check_nothing_lost(db, runner, n)
    assert len(per_pid) >= 3
    assert all("MiB > max_memory_per_child 96 MiB" in line["msg"] for line in lines), lines
    assert db.hget("tq:stats", "retirements:max_tasks") is None
