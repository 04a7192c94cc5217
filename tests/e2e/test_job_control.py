"""Job control through the built PEX (SPEC §11): unique jobs, cancel, status. Each test drives a real runner
and real Redis, and SIGKILLs workers where the contract says a crash must not matter."""

from __future__ import annotations

import os
import signal

import pytest

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs, store

TASKS = """
gated_unique: {path: testjobs.tasks:gated, unique_for: 30s}
short_hold: {path: testjobs.tasks:gated, unique_for: 3s}
"""


def started(redis_url: str) -> list[tuple[int, int]]:
    """(item, worker pid) of every start of a gated task, in order."""
    out = []
    for line in store(redis_url).lrange("test:started", 0, -1):
        n, pid, _ = line.decode().split("|")
        out.append((int(n), int(pid)))
    return out


@pytest.fixture
def runner(make_runner: RunnerFactory, redis_url: str) -> Runner:
    return make_runner(redis_url, workers=2, slots=10, tasks=TASKS).start(expect_workers=2)


def test_1000_enqueues_of_100_keys_run_100_times(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    ids: dict[int, set[str]] = {}
    for _ in range(10):
        for n in range(100):
            ids.setdefault(n, set()).add(client.enqueue("gated_unique", n))
    # the first 20 were running (held at the gate) while their duplicates came: the same id all the same
    assert {n: len(found) for n, found in ids.items()} == {n: 1 for n in range(100)}
    db = store(redis_url)
    db.set("test:gate", 1)
    wait_for(lambda: sum(runs(redis_url).values()) >= 100, timeout=60, what="100 runs")
    for n, (task_id,) in ids.items():
        assert client.result(task_id, timeout=10) == n
    assert runs(redis_url) == {n: 1 for n in range(100)}
    duplicates = sum(int(v) for k, v in db.hgetall("tq:stats").items() if k.startswith(b"duplicate:"))
    assert duplicates == 900
    # finished: the key is free, an equal call runs again
    again = client.enqueue("gated_unique", 7)
    assert again not in ids[7]
    assert client.result(again, timeout=10) == 7


def test_a_unique_key_survives_a_worker_sigkill_and_is_released_when_its_task_finishes(
    runner: Runner, redis_url: str
) -> None:
    client = Client(redis_url)
    db = store(redis_url)
    first = client.enqueue("gated_unique", 1)
    wait_for(lambda: started(redis_url), timeout=20, what="the task to start")
    ((_, holder),) = started(redis_url)
    os.kill(holder, signal.SIGKILL)
    # re-delivered after its worker's lease runs out (to another process), the key still held meanwhile
    wait_for(lambda: len(started(redis_url)) == 2, timeout=30, what="the re-delivery")
    assert started(redis_url)[1][1] != holder
    assert client.enqueue("gated_unique", 1) == first
    db.set("test:gate", 1)
    assert client.result(first, timeout=20) == 1
    assert db.keys("tq:unique:*") == []  # released in the settle script, with the ack
    assert client.enqueue("gated_unique", 1) != first


def test_the_hold_ends_after_unique_for_and_a_later_holder_keeps_its_key(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    db = store(redis_url)
    first = client.enqueue("short_hold", 5, gate="test:gate:1", unique_key="k")
    wait_for(lambda: started(redis_url), timeout=20, what="the task to start")
    assert client.enqueue("short_hold", 6, gate="test:gate:2", unique_key="k") == first
    # still running, but its 3 s hold is over: an equal call is enqueued (it waits at its own gate)
    wait_for(lambda: not db.exists("tq:unique:short_hold:k:k"), timeout=10, what="the hold to expire")
    second = client.enqueue("short_hold", 6, gate="test:gate:2", unique_key="k")
    assert second != first
    db.set("test:gate:1", 1)
    assert client.result(first, timeout=20) == 5
    # the first one's finish did not release the second one's key (compare-and-delete)
    assert db.get("tq:unique:short_hold:k:k") == second.encode()
    assert client.enqueue("short_hold", 7, unique_key="k") == second
    db.set("test:gate:2", 1)
    assert client.result(second, timeout=20) == 6


def test_unique_key_per_call(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    a = client.enqueue("gated", 1, unique_key="user-42")
    assert client.enqueue("gated", 2, unique_key="user-42") == a  # other args, same key: a duplicate
    assert client.enqueue("gated", 1, unique_key="user-43") != a
    assert client.enqueue("gated", 1) != a  # no key, and `gated` has no unique_for: not deduplicated
    store(redis_url).set("test:gate", 1)
    assert client.result(a, timeout=20) == 1
