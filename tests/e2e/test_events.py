"""Lifecycle events through the built PEX (SPEC §13): 50 tasks, some failing past their retries, leave each
task's events in causal order with the documented fields; `events tail --json` prints them; with events
off nothing is written; a worker SIGKILLed mid-task: its task gets a second `started` and one final event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from taskqueue.client import Client
from taskqueue.store import eventlog
from tests.conftest import wait_for
from tests.e2e.harness import RunnerFactory, pex_cmd, runs, store

EVENTS_ON = "events: {enabled: true, max_len: 100000}\n"
FIELDS = {"event", "id", "task", "queue", "attempt", "at"}
FINAL = {"succeeded", "failed", "cancelled"}


def _events(redis_url: str) -> list[dict[str, Any]]:
    return [e for i, f in store(redis_url).xrange("tq:events") if (e := eventlog.entry(i, f)) is not None]


def _flows(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["id"], []).append(event)
    return found


def _all_final(redis_url: str, ids: list[str]) -> bool:
    flows = _flows(_events(redis_url))
    return all(any(e["event"] in FINAL for e in flows.get(i, ())) for i in ids)


def test_fifty_tasks_leave_their_events_in_causal_order_and_events_tail_prints_them(
    make_runner: RunnerFactory, redis_url: str, pex: Path
) -> None:
    runner = make_runner(redis_url, workers=2, slots=10, extra=EVENTS_ON).start(expect_workers=2)
    client = Client(redis_url)
    ok = client.enqueue_many([("record", (n,), {}) for n in range(40)])
    failing = [client.enqueue("always_fails", f"ev-{n}") for n in range(10)]  # max_retries 2: 3 attempts
    wait_for(lambda: _all_final(redis_url, ok + failing), timeout=60, what="a final event for all 50 tasks")

    events = _events(redis_url)
    flows = _flows(events)
    for event in events:
        assert set(event) >= FIELDS, event
        assert event["queue"] == "default"
    for task_id in ok:
        flow = flows[task_id]
        assert [e["event"] for e in flow] == ["enqueued", "started", "succeeded"]
        assert [e["attempt"] for e in flow] == [0, 1, 1]
        assert {e["task"] for e in flow} == {"record"}
    for task_id in failing:
        flow = flows[task_id]
        names = ["enqueued", "started", "retried", "started", "retried", "started", "failed"]
        assert [e["event"] for e in flow] == names
        assert [e["attempt"] for e in flow] == [0, 1, 1, 2, 2, 3, 3]
        assert all(e["error"].startswith("ValueError: boom ev-") for e in flow if e["event"] in ("retried", "failed"))
        assert [e["at"] for e in flow] == sorted(e["at"] for e in flow)  # Redis' clock, in stream order
    assert len(runs(redis_url)) == 40
    assert set(flows) == set(ok + failing)

    shown = pex_cmd(pex, runner.config, "events", "tail", "--json", "--count", "1000", redis_url=redis_url)
    assert shown.returncode == 0, shown.stderr
    printed = [json.loads(line) for line in shown.stdout.splitlines()]
    assert printed == events  # every event, oldest first, with its fields and stream id
    text = pex_cmd(pex, runner.config, "events", "tail", "--count", "3", redis_url=redis_url)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 3
    assert "failed" in text.stdout or "succeeded" in text.stdout

    stats = store(redis_url).hgetall("tq:stats")
    assert int(stats[b"events:enqueued"]) == 50 and int(stats[b"events:failed"]) == 10
    assert int(stats[b"events:started"]) == 40 + 30 and int(stats[b"events:succeeded"]) == 40


def test_with_events_off_nothing_is_written(make_runner: RunnerFactory, redis_url: str, pex: Path) -> None:
    runner = make_runner(redis_url, workers=1, slots=10).start(expect_workers=1)
    client = Client(redis_url)
    client.enqueue_many([("record", (n,), {}) for n in range(20)])
    client.enqueue("always_fails", "quiet")
    db = store(redis_url)
    wait_for(lambda: len(runs(redis_url)) == 20 and db.hlen("tq:dead") == 1, timeout=30, what="all settled")
    assert not db.exists("tq:events")
    assert not [k for k in db.hkeys("tq:stats") if k.startswith(b"events:")]
    shown = pex_cmd(pex, runner.config, "events", "tail", "--json", redis_url=redis_url)
    assert shown.returncode == 0 and shown.stdout == ""


def test_a_worker_killed_mid_task_gives_a_second_started_and_one_final_event(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    runner = make_runner(redis_url, workers=1, slots=2, extra=EVENTS_ON).start(expect_workers=1)
    task_id = Client(redis_url).enqueue("slow_once", 7, 60)  # sleeps a minute on its first delivery only
    db = store(redis_url)
    wait_for(lambda: db.exists("test:slow:7"), timeout=20, what="the task running")
    (victim,) = runner.worker_pids()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: _all_final(redis_url, [task_id]), timeout=60, what="its final event after the kill")
    flow = [(e["event"], e["attempt"]) for e in _flows(_events(redis_url))[task_id]]
    assert flow == [("enqueued", 0), ("started", 1), ("started", 2), ("succeeded", 2)]  # the lost attempt counts
    assert runs(redis_url) == {7: 1}
    assert victim not in runner.worker_pids()


def test_events_tail_follow_prints_new_events_as_they_come(
    make_runner: RunnerFactory, redis_url: str, pex: Path
) -> None:
    runner = make_runner(redis_url, workers=1, slots=10, extra=EVENTS_ON).start(expect_workers=1)
    client = Client(redis_url)
    before = client.enqueue("record", 1)
    wait_for(lambda: _all_final(redis_url, [before]), timeout=20, what="the first task's final event")
    # a command timeout well under the follower's idle time: its blocking read must stay below it
    env = {**os.environ, "TEST_REDIS_URL": redis_url, "REDIS_COMMAND_TIMEOUT": "0.5"}
    tail = subprocess.Popen(
        [str(pex), "-c", str(runner.config), "events", "tail", "--follow", "--json", "--count", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(line) for line in tail.stdout or ()), daemon=True)
    reader.start()
    try:
        # what was there is printed first; the follow goes on from its last entry, so nothing is missed
        wait_for(lambda: len(lines) == 3, timeout=20, what="the events already in the stream")
        idle_until = time.monotonic() + 2.0  # four command timeouts with nothing new to read
        wait_for(lambda: time.monotonic() > idle_until or tail.poll() is not None, timeout=10, what="idle time")
        assert tail.poll() is None, "the follower stopped while the stream was quiet"
        after = client.enqueue("record", 2)
        wait_for(lambda: len(lines) == 6, timeout=20, what="the new task's events, followed")
        assert [(e["id"], e["event"]) for e in lines] == [
            *[(before, name) for name in ("enqueued", "started", "succeeded")],
            *[(after, name) for name in ("enqueued", "started", "succeeded")],
        ]
    finally:
        tail.send_signal(signal.SIGINT)
        code = tail.wait(10)
        reader.join(10)
        errors = tail.stderr.read() if tail.stderr else ""
        for pipe in (tail.stdout, tail.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 130, errors  # Ctrl-C: the CLI's exit code for it, no traceback
