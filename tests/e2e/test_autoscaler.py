"""Auto-scaling worker processes through the built PEX: a burst scales up and back down, a steady load
between the thresholds does not flap, and runners sharing a Redis share the signal within their bounds."""

from __future__ import annotations

import time

import pytest

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs

SCALER = (
    "{{enabled: true, min_workers: 1, max_workers: {max}, scale_up_threshold: 5.0, scale_down_threshold: 1.0, "
    "scale_up_count: 2, scale_down_count: 1, interval: {interval}, cooldown: {cooldown}}}"
)


def _decisions(runner: Runner) -> list[str]:
    return [line["msg"] for line in runner.logs() if str(line.get("msg", "")).startswith("scale ")]


def _messages(runner: Runner) -> list[str]:
    return [str(line.get("msg", "")) for line in runner.logs()]


def _holds(runner: Runner) -> int:
    return sum(1 for msg in _messages(runner) if msg.startswith("autoscaler: hold at "))


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"TASK_QUEUE_WORKERS": "4"}, 4), ({}, 2)],
    ids=["TASK_QUEUE_WORKERS=4", "initial_count=2"],
)
def test_the_autoscaler_never_scales_below_the_worker_count_the_user_set(
    make_runner: RunnerFactory, redis_url: str, env: dict[str, str], expected: int
) -> None:
    """No min_workers in the YAML: it defaults to the count set by initial_count or $TASK_QUEUE_WORKERS."""
    scaler = "{enabled: true, max_workers: 6, interval: 200ms, cooldown: 0s}"
    runner = make_runner(redis_url, workers=2, autoscaler=scaler, args=["--log-level", "debug"], env=env)
    runner.start()
    # an idle queue, evaluated again and again (each hold is logged at debug level)
    wait_for(lambda: _holds(runner) >= 10 or _decisions(runner), timeout=30, what="10 autoscaler evaluations")
    assert _decisions(runner) == []
    wait_for(lambda: len(runner.worker_pids()) == expected, timeout=10, what=f"{expected} worker processes")
    assert f"autoscaler: hold at {expected} worker process(es): pending=0" in "\n".join(_messages(runner))


def test_burst_scales_up_within_two_intervals_drains_and_scales_back(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    scaler = SCALER.format(max=4, interval="1s", cooldown="2s")
    runner = make_runner(redis_url, workers=1, slots=10, autoscaler=scaler).start(expect_workers=1)
    Client(redis_url).enqueue_many([("record", (n, 0.1), {}) for n in range(400)])
    burst_at = time.monotonic()
    wait_for(lambda: len(runner.worker_pids()) > 1, timeout=10, what="a scale-up")
    # two evaluation intervals, plus the time a new process needs to start and register
    assert time.monotonic() - burst_at < 2 * 1.0 + 1.5
    wait_for(lambda: len(runs(redis_url)) == 400, timeout=60, what="the burst to drain")
    wait_for(lambda: len(runner.worker_pids()) == 1, timeout=30, what="a scale-down to min_workers")
    assert runs(redis_url) == {n: 1 for n in range(400)}  # nothing lost, nothing run twice
    decisions = _decisions(runner)
    assert decisions[0].startswith("scale up 1→3: per_worker ")
    assert any(d.startswith("scale down") for d in decisions)


def test_steady_load_between_thresholds_never_scales(make_runner: RunnerFactory, redis_url: str) -> None:
    scaler = SCALER.format(max=4, interval="250ms", cooldown="0s")
    runner = make_runner(redis_url, workers=1, slots=2, grace="500ms", autoscaler=scaler)
    runner.start(expect_workers=1)
    # 2 running + 3 waiting for the whole observation: 3 pending per worker, between 1.0 and 5.0
    Client(redis_url).enqueue_many([("sleep_long", (60,), {}) for _ in range(5)])
    observed_until = time.monotonic() + 20  # 80 evaluations
    wait_for(
        lambda: time.monotonic() > observed_until or len(runner.worker_pids()) != 1,
        timeout=30,
        what="the observation window",
    )
    assert len(runner.worker_pids()) == 1
    assert _decisions(runner) == []


def test_two_runners_share_the_signal_within_their_own_bounds(make_runner: RunnerFactory, redis_url: str) -> None:
    scaler = SCALER.format(max=2, interval="500ms", cooldown="1s")
    first = make_runner(redis_url, workers=1, slots=5, autoscaler=scaler).start(expect_workers=1)
    second = make_runner(redis_url, workers=1, slots=5, autoscaler=scaler).start(expect_workers=1)
    Client(redis_url).enqueue_many([("record", (n, 0.05), {}) for n in range(600)])
    most = [0, 0]
    deadline = time.monotonic() + 60
    while len(runs(redis_url)) < 600 and time.monotonic() < deadline:  # sample the pool sizes while draining
        most = [max(most[0], len(first.worker_pids())), max(most[1], len(second.worker_pids()))]
        time.sleep(0.05)
    assert len(runs(redis_url)) == 600
    assert most == [2, 2]  # both scaled on the shared backlog, neither beyond its own max_workers
