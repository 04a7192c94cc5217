"""Redis at maxmemory with noeviction (issue 28.2): an outage of writes, not of workers. Mid-drain the deployment's
Redis is made to refuse writes for several worker leases: no live worker is killed or recovered, what finished is
settled (settling frees memory), nothing runs twice, `/health` says why, the CLI's enqueue prints one line, HTTP
answers 507; once memory is freed everything else runs, once.

One trial here; `TQ_OOM_TRIALS=20 ./test.sh tests/e2e/test_full_redis.py -s` runs a campaign and prints its
figures per trial. The task bodies record their runs in another Redis (the session's), not the full one."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from taskqueue.client import Client
from tests.conftest import RedisServer, wait_for
from tests.e2e.harness import RunnerFactory, pex_cmd, runs, store
from tests.e2e.test_http import fetch, http_url

N = 400
TRIALS = int(os.environ.get("TQ_OOM_TRIALS", "1"))
FULL_S = 5.0  # about three leases (heartbeat 500 ms): long enough for a lease to run out if heartbeats failed


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_full_redis_kills_no_worker_and_runs_nothing_twice(
    make_runner: RunnerFactory, own_redis: RedisServer, redis_url: str, trial: int
) -> None:
    full = own_redis.url
    db = store(full)
    runner = make_runner(
        full, workers=2, slots=10, heartbeat="500ms", http={"port": 0}, env={"TEST_REDIS_URL": redis_url}
    ).start(expect_workers=2)
    base = http_url(runner)
    workers = set(runner.worker_pids())
    Client(full).enqueue_many([("record", (n, 0.2), {}) for n in range(N)])
    wait_for(lambda: len(runs(redis_url)) >= 20, timeout=30, what="20 tasks done")
    db.config_set("maxmemory", max(1, int(db.info("memory")["used_memory"]) - 4_000_000))
    began = time.monotonic()
    try:
        health: dict[str, object] = {}

        def says_out_of_memory() -> bool:
            health.update(json.loads(fetch(f"{base}/health")[1]))
            return "out of memory" in str(health["components"])

        wait_for(says_out_of_memory, timeout=10, what="/health saying Redis is out of memory")
        cli = pex_cmd(runner.pex, runner.config, "enqueue", "record", "--args", "[-1]", redis_url=redis_url)
        request = urllib.request.Request(
            f"{base}/tasks/enqueue",
            data=json.dumps({"task": "record", "args": [-2]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        http_status, http_body = fetch(request)
        time.sleep(max(0.0, FULL_S - (time.monotonic() - began)))  # the fault's length, not a synchronisation
        during = len(runs(redis_url))
    finally:
        db.config_set("maxmemory", 0)
    wait_for(lambda: len(runs(redis_url)) == N, timeout=60, what="every task done once Redis has memory again")
    wait_for(lambda: not db.keys("tq:inflight:*"), timeout=20, what="nothing left in flight")
    done = runs(redis_url)
    duplicated = sum(count - 1 for count in done.values())
    lost = N - len(done)
    print(f"\nfull-Redis trial {trial}: {N} tasks, {during} done while full, {lost} lost, {duplicated} run twice")
    assert (cli.returncode, cli.stderr.count("\n")) == (1, 1), cli.stderr
    assert "out of memory" in cli.stderr and "Traceback" not in cli.stderr
    assert http_status == 507 and b"out of memory" in http_body
    assert duplicated == 0 and -1 not in done and -2 not in done  # the refused enqueues wrote nothing
    assert set(runner.worker_pids()) == workers, "a live worker was replaced"
    assert not [line for line in runner.logs() if "stopped heartbeating" in str(line.get("msg"))]
    assert runner.alive()
