"""The network between the processes and Redis fails: a proxy of our own (tests/faultproxy.py) stalls every
connection, then delivers late what it held (also the requests a client already timed out on); or resets every
connection; or delays every chunk beyond the command timeout. Mid-drain, with 2 workers x 10 slots and a 1 s
heartbeat: every task must run, none may stay in flight, and the `processed` counter must count each once.

One trial of each here; `TQ_NET_TRIALS=20 ./test.sh tests/e2e/test_network_faults.py -s` runs a campaign and
prints its figures (tasks, lost, duplicated, stuck) per trial; `TQ_NET_FAULT_S=10 TQ_NET_COMMAND_TIMEOUT=5` makes
the fault the issue's (a 10 s stall against the default 5 s command timeout)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from taskqueue.client import Client
from tests.conftest import RedisServer, wait_for
from tests.e2e.harness import RunnerFactory, runs, store
from tests.faultproxy import FaultProxy, fault_proxy

N = 3420
TRIALS = int(os.environ.get("TQ_NET_TRIALS", "1"))
COMMAND_TIMEOUT_S = float(os.environ.get("TQ_NET_COMMAND_TIMEOUT", "1"))
FAULT_S = float(os.environ.get("TQ_NET_FAULT_S", "3"))  # > the command timeout: clients give up, requests come late


def stall(proxy: FaultProxy) -> None:
    proxy.stall()
    time.sleep(FAULT_S)  # the fault itself lasts this long (what is waited for comes after, on conditions)
    proxy.resume()


def cut(proxy: FaultProxy) -> None:
    for _ in range(3):
        proxy.cut()
        time.sleep(0.3)


def delay(proxy: FaultProxy) -> None:
    proxy.delay(COMMAND_TIMEOUT_S * 1.5)
    time.sleep(FAULT_S)
    proxy.delay(0)


FAULTS: dict[str, Callable[[FaultProxy], None]] = {"stall": stall, "cut": cut, "delay": delay}


def _processed(db: object) -> int:
    fields: dict[bytes, bytes] = db.hgetall("tq:stats")  # type: ignore[attr-defined]
    return sum(int(v) for k, v in fields.items() if k.startswith(b"processed:"))


def _in_flight(db: object) -> int:
    keys = db.keys("tq:inflight:*") + db.keys("tq:claim:*")  # type: ignore[attr-defined]
    return sum(db.hlen(k) if b":inflight:" in k else db.llen(k) for k in keys)  # type: ignore[attr-defined]


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_network_fault_mid_drain_loses_and_double_counts_nothing(
    make_runner: RunnerFactory, redis_server: RedisServer, redis_url: str, fault: str, trial: int
) -> None:
    db = store(redis_url)
    with fault_proxy(redis_server.port) as proxy:
        runner = make_runner(
            proxy.url,
            workers=2,
            slots=10,
            heartbeat="1s",
            env={"TEST_REDIS_URL": redis_url, "REDIS_COMMAND_TIMEOUT": f"{COMMAND_TIMEOUT_S}s"},
        )
        runner.redis_url = redis_url  # the test's own look at Redis does not go through the proxy
        runner.start(expect_workers=2)
        Client(redis_url).enqueue_many([("record", (n, 0.001), {}) for n in range(N)])
        wait_for(lambda: len(runs(redis_url)) >= N // 4, timeout=60, what=f"{N // 4} tasks done")
        FAULTS[fault](proxy)
        try:
            wait_for(lambda: len(runs(redis_url)) == N, timeout=60, what="every task done after the fault")
            wait_for(lambda: _in_flight(db) == 0, timeout=20, what="nothing left in flight")
            wait_for(lambda: _processed(db) >= N, timeout=20, what="every success counted")
        finally:
            done = runs(redis_url)
            print(
                f"\n{fault} trial {trial}: {N} tasks, {N - len(done)} lost, "
                f"{sum(c - 1 for c in done.values())} duplicated, {_in_flight(db)} stuck in flight, "
                f"processed counter {_processed(db)}"
            )
        assert _processed(db) == N
        assert runner.alive()
