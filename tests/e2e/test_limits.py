"""Rate and concurrency limits through the built PEX (SPEC §11): deployment-wide across runners and processes,
keyed and fair, waiting without a worker slot, oldest first; a rate holds as the task bodies see it; a
SIGKILLed holder's slot comes back."""

from __future__ import annotations

import os
import signal
import time

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import RunnerFactory, runs, store

TASKS = """
rated: {path: testjobs.tasks:limited, rate_limit: 20/s}
two_at_once: {path: testjobs.tasks:limited, concurrency: 2}
per_tenant: {path: testjobs.tasks:limited, rate_limit: {limit: 5/s, key: tenant}}
both: {path: testjobs.tasks:limited, rate_limit: 10/s, concurrency: 1}
partner: {path: testjobs.tasks:partner, max_retries: 0}
"""


def starts(redis_url: str) -> list[tuple[int, str, float, int]]:
    """(item, tenant, start time, pid) of every start of a limited task, in order. The start time is when the
    limits admitted it (current_task().admitted_at, Redis' clock): the body's first line follows within a
    few ms, or tens of ms on a loaded machine (thread hand-off, CPU), which would blur a 1 s window."""
    out = []
    for line in store(redis_url).lrange("test:starts", 0, -1):
        n, tenant, at, pid, _ = line.decode().split("|")
        out.append((int(n), tenant, float(at), int(pid)))
    return out


def began(redis_url: str) -> list[float]:
    """When each body began, as the body saw it (time.time() on its first lines), in order."""
    return sorted(float(line.decode().split("|")[4]) for line in store(redis_url).lrange("test:starts", 0, -1))


def busiest_second(times: list[float]) -> int:
    """The most of these (sorted) times in any window [t, t + 1 s)."""
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


def most_at_once(redis_url: str, killed: tuple[tuple[float, float], ...] = ()) -> int:
    """The most task bodies that ran at the same time, from their spans (plus the killed bodies', which never
    recorded their own)."""
    spans = list(killed)
    for line in store(redis_url).lrange("test:spans", 0, -1):
        _, began, ended = line.decode().split("|")
        spans.append((float(began), float(ended)))
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans], key=lambda ev: (ev[0], ev[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_a_rate_limit_holds_across_runners_and_other_tasks_flow_meanwhile(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    first = make_runner(redis_url, workers=2, slots=10, tasks=TASKS).start(expect_workers=2)
    make_runner(redis_url, workers=1, slots=10, tasks=TASKS).start()
    wait_for(lambda: len(first.worker_pids()) == 2, timeout=20)
    client = Client(redis_url)
    ids = client.enqueue_many(("rated", (n,), {}) for n in range(100))
    plain = client.enqueue_many(("record", (1000 + n,), {}) for n in range(200))
    for task_id in plain:  # the other task is not held behind the limited backlog
        client.result(task_id, timeout=20)
    plain_done = time.time()
    for task_id in ids:
        client.result(task_id, timeout=60)
    times = sorted(at for _, _, at, _ in starts(redis_url))
    assert len(times) == 100
    assert plain_done < times[-1] - 2.0  # ~4 s of limited starts remained when the plain ones were done
    assert busiest_second(times) <= 20
    rate = (len(times) - 20) / (times[-1] - times[0])  # the first window's 20 start at once
    assert rate >= 18.0, f"{rate:.1f}/s achieved for a 20/s limit"
    assert len({pid for *_, pid in starts(redis_url)}) == 3  # every process of both runners took part


def test_concurrency_holds_across_processes_and_a_killed_holders_slot_comes_back(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    runner = make_runner(redis_url, workers=3, slots=10, tasks=TASKS).start(expect_workers=3)
    client = Client(redis_url)
    db = store(redis_url)
    ids = client.enqueue_many(("two_at_once", (n,), {"sleep_s": 0.1}) for n in range(30))
    for task_id in ids:
        client.result(task_id, timeout=60)
    assert most_at_once(redis_url) == 2
    assert runs(redis_url) == {n: 1 for n in range(30)}
    # two holders held at a gate, a third waiting; SIGKILL one holder's process: its slot comes back
    db.delete("test:starts", "test:spans", "test:runs")
    held = [client.enqueue("two_at_once", 100 + n, gate="test:gate") for n in range(3)]
    wait_for(lambda: len(starts(redis_url)) == 2, timeout=20, what="two holders")
    victim = starts(redis_url)[0][3]
    assert victim in runner.worker_pids()
    # both holders may be in the victim's process: every body it was running dies with it, span unrecorded
    bodies = [line.decode().split("|") for line in db.lrange("test:starts", 0, -1)]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    killed = tuple((float(body[4]), killed_at) for body in bodies if int(body[3]) == victim)
    wait_for(lambda: len(starts(redis_url)) >= 3, timeout=30, what="the freed slot to be taken")
    db.set("test:gate", 1)
    for task_id in held:
        client.result(task_id, timeout=30)
    assert set(runs(redis_url)) == {100, 101, 102}
    assert most_at_once(redis_url, killed=killed) == 2


def test_keyed_limits_serve_every_tenant(make_runner: RunnerFactory, redis_url: str) -> None:
    make_runner(redis_url, workers=2, slots=10, tasks=TASKS).start(expect_workers=2)
    client = Client(redis_url)
    a = client.enqueue_many(("per_tenant", (n,), {"tenant": "a"}) for n in range(100))  # 20 s at 5/s
    b = client.enqueue_many(("per_tenant", (1000 + n,), {"tenant": "b"}) for n in range(10))  # behind them
    for task_id in a + b:
        client.result(task_id, timeout=90)
    by_tenant: dict[str, list[float]] = {}
    for _, tenant, at, _ in starts(redis_url):
        by_tenant.setdefault(tenant, []).append(at)
    assert len(by_tenant["a"]) == 100 and len(by_tenant["b"]) == 10
    assert max(by_tenant["b"]) < min(by_tenant["a"]) + 2.5  # b's own 5/s: 10 in ~1 s, not behind a's backlog
    assert max(by_tenant["a"]) - max(by_tenant["b"]) > 15  # a's backlog took its 5/s: ~20 s
    counted = {k.decode(): int(v) for k, v in store(redis_url).hgetall("tq:stats").items()}
    assert counted.get("rate_limited:default:per_tenant", 0) >= 90


def test_rate_limited_raised_by_a_task_waits_without_counting_an_attempt(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    make_runner(redis_url, workers=1, slots=10, tasks=TASKS).start(expect_workers=1)
    client = Client(redis_url)
    started = time.monotonic()
    task_id = client.enqueue("partner", 1)
    assert client.result(task_id, timeout=20) == 1  # attempt 1 again, though max_retries is 0
    assert time.monotonic() - started >= 0.3
    assert store(redis_url).hget("tq:stats", "rate_limited:default:partner") == b"1"


def test_a_rate_limit_holds_where_the_bodies_begin(make_runner: RunnerFactory, redis_url: str) -> None:
    """Under load (4 processes x 10 slots of 2 runners, bodies that burn CPU), no second as the bodies see it
    (their own clock, when they begin) holds more than 20 starts of a 20/s task: admit.lua counts a start from
    the latest time its body may begin, and a body that would begin later does not, it is admitted again."""
    make_runner(redis_url, workers=2, slots=10, tasks=TASKS).start(expect_workers=2)
    make_runner(redis_url, workers=2, slots=10, tasks=TASKS).start(expect_workers=2)
    client = Client(redis_url)
    ids = client.enqueue_many(("rated", (n,), {"busy_s": 0.02}) for n in range(200))
    for task_id in ids:
        client.result(task_id, timeout=90)
    times = began(redis_url)
    assert len(times) == 200 and runs(redis_url) == {n: 1 for n in range(200)}
    assert busiest_second(times) <= 20


def test_a_rate_and_a_concurrency_limit_on_one_key_keep_fifo(make_runner: RunnerFactory, redis_url: str) -> None:
    """Enqueued one by one, as the worker watches the queue, they start and finish in the order enqueued: the
    worker asks admit.lua in the order it took them, a task let go from the waiting list keeps its place until
    admitted, and the fresh ones wait behind the waiting ones."""
    make_runner(redis_url, workers=1, slots=10, tasks=TASKS).start(expect_workers=1)
    client = Client(redis_url)
    ids = [client.enqueue("both", n, sleep_s=0.02) for n in range(25)]
    for task_id in ids:
        client.result(task_id, timeout=60)
    db = store(redis_url)
    assert [int(line.split(b"|")[0]) for line in db.lrange("test:starts", 0, -1)] == list(range(25))
    assert [int(line.split(b"|")[0]) for line in db.lrange("test:spans", 0, -1)] == list(range(25))
