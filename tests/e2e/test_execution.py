"""Reliable execution, end to end through the built PEX: every enqueue path, priorities, retries,
dead letters, timeouts and bad input."""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path

import msgpack
import pytest

from taskqueue.client import Client
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, lpush_cli, pex_cmd, runs, store
from tests.e2e.test_http import fetch, http_url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def test_every_enqueue_path_runs_with_args_intact(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url).start(expect_workers=2)
    lpush_cli(
        _port(redis_url),
        "tq:queue:default",
        [
            b'{"task": "echo", "id": "cli-json", "args": [1, "two"], "kwargs": {"x": {"y": [3]}}}',
            msgpack.packb({"task": "echo", "id": "cli-msgpack", "args": [4], "kwargs": {"z": None}}),
        ],
    )
    out = pex_cmd(
        runner.pex,
        runner.config,
        "enqueue",
        "echo",
        "--args",
        "[5]",
        "--kwargs",
        '{"k": "v"}',
        redis_url=redis_url,
    )
    assert out.returncode == 0, out.stderr
    cli_id = out.stdout.strip()
    client = Client(redis_url)
    sync_id = client.enqueue("record", 1)
    async_id = client.enqueue("arecord", 2)
    class_id = client.enqueue("recorder", n=3, label="seed")
    assert client.result("cli-json") == {
        "args": [1, "two"],
        "kwargs": {"x": {"y": [3]}},
        "task": "echo",
        "queue": "default",
        "attempt": 1,
    }
    assert client.result("cli-msgpack")["args"] == [4]
    assert client.result(cli_id)["kwargs"] == {"k": "v"}
    assert client.result(sync_id) == 1
    assert client.result(async_id) == 2
    assert client.result(class_id) == {"n": 3, "label": "seed"}
    ids = client.enqueue_many([("record", (n,), {}) for n in range(100, 10_100)])
    assert len(set(ids)) == 10_000
    wait_for(lambda: len(runs(redis_url)) >= 10_003, timeout=60, what="10,000 bulk tasks")
    assert all(count == 1 for count in runs(redis_url).values())


def test_strict_priority_with_one_worker_and_one_slot(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url, workers=1, slots=1)
    client = Client(redis_url)
    runner.start(expect_workers=1)  # publishes the task table
    runner.stop()
    for i in range(5):  # enqueued low first: arrival order must not matter, only priority
        client.enqueue("order", f"low{i}", queue="low_priority")
    for i in range(5):
        client.enqueue("order", f"default{i}", queue="default")
    for i in range(5):
        client.enqueue("order", f"high{i}", queue="high_priority")
    runner.start(expect_workers=1)
    db = store(redis_url)
    wait_for(lambda: db.llen("test:order") == 15, timeout=20, what="15 ordered tasks")
    done = [t.decode() for t in db.lrange("test:order", 0, -1)]
    assert done == [f"high{i}" for i in range(5)] + [f"default{i}" for i in range(5)] + [f"low{i}" for i in range(5)]


def test_retries_back_off_then_dead_letter_and_dead_retry(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url).start(expect_workers=2)
    client = Client(redis_url)
    db = store(redis_url)
    task_id = client.enqueue("always_fails", "a")
    retry_id = client.enqueue("retry_once", "r")
    reject_id = client.enqueue("reject", "x")
    wait_for(lambda: db.llen("test:attempts:a") == 3, timeout=20, what="1 attempt + 2 retries")
    stamps = [float(t) for t in db.lrange("test:attempts:a", 0, -1)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert 0.2 <= gaps[0] < gaps[1], gaps  # 200ms then 400ms: exponential, no jitter
    assert gaps[1] >= 0.4
    assert client.result(retry_id) == 2
    with pytest.raises(Exception, match="rejected: not acceptable"):
        client.result(reject_id)
    assert db.llen("test:attempts:x") == 1  # Reject: no retries

    listed = pex_cmd(runner.pex, runner.config, "dead", "list", "--json", redis_url=redis_url)
    records = {r["id"]: r for r in json.loads(listed.stdout)}
    assert records[task_id]["error"] == "ValueError: boom a"
    assert "Traceback" in records[task_id]["traceback"]
    assert records[task_id]["attempts"] == 3
    assert reject_id in records
    text = pex_cmd(runner.pex, runner.config, "dead", "list", redis_url=redis_url).stdout.splitlines()
    mine = text.index(next(line for line in text if line.startswith(f"{task_id}  always_fails  ")))
    shown = list(itertools.takewhile(lambda line: line.startswith("    "), text[mine + 1 :]))  # its traceback's end
    assert 2 <= len(shown) <= 7, text  # the README: "shows dead-lettered tasks with their error and traceback"
    assert any('tasks.py", line' in line and "in always_fails" in line for line in shown), text
    assert shown[-1] == "    ValueError: boom a"

    again = pex_cmd(runner.pex, runner.config, "dead", "retry", task_id, redis_url=redis_url)
    assert again.returncode == 0, again.stderr
    wait_for(lambda: db.llen("test:attempts:a") == 6, timeout=20, what="the dead task run again")
    status = json.loads(pex_cmd(runner.pex, runner.config, "status", "--json", redis_url=redis_url).stdout)
    assert status["dead"] == 2  # failed again after its retries; the rejected one is still there


def test_timeouts_fail_the_attempt_while_other_tasks_flow(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url, workers=2, slots=4).start(expect_workers=2)
    client = Client(redis_url)
    before = set(runner.worker_pids())
    slow_async = client.enqueue("sleep_async", 30)
    slow_sync = client.enqueue("sleep_sync", 30)
    client.enqueue_many([("record", (n,), {}) for n in range(200)])
    wait_for(lambda: len(runs(redis_url)) == 200, timeout=30, what="200 quick tasks beside the slow ones")
    with pytest.raises(Exception, match=r"timed out after 0\.5s"):
        client.result(slow_async, timeout=10)
    with pytest.raises(Exception, match=r"timed out after 0\.5s"):
        client.result(slow_sync, timeout=10)
    # The worker whose thread is stuck was replaced; the runner itself kept running.
    wait_for(
        lambda: len(runner.worker_pids()) == 2 and set(runner.worker_pids()) != before,
        timeout=20,
        what="the stuck worker process to be replaced",
    )
    assert runner.alive()


def test_bad_input_is_dead_lettered_and_good_input_still_runs(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url).start(expect_workers=2)
    pids = runner.worker_pids()
    port = _port(redis_url)
    bad = [
        b"\x00\xff\xfe garbage bytes",
        b'["a", "list"]',
        b'{"kwargs": {"no": "task"}}',
        b'{"task": "no_such_task"}',
        b'{"task": "os:system", "args": ["touch /tmp/taskqueue-pwned"]}',
        b'{"task": "record", "args": "not-a-list"}',
        b'{"task": "record", "kwargs": {"n": 1, "unexpected": 2}}',
        b'{"task": "record", "id": "bad-utf8", "kwargs": {"n": "\xff\xfe"}}',
        b'{"task": "record", "kwargs": {"n": 1}, "surprise": true}',
        json.dumps({"task": "record", "kwargs": {"n": 7, "pad": "x" * (5 << 20)}}).encode(),
    ]
    good = [json.dumps({"task": "record", "args": [n]}).encode() for n in range(len(bad))]
    interleaved = [m for pair in zip(bad, good, strict=True) for m in pair]
    lpush_cli(port, "tq:queue:default", interleaved)
    db = store(redis_url)
    wait_for(lambda: db.zcard("tq:dead:index") == len(bad), timeout=30, what="every bad message dead-lettered")
    wait_for(lambda: len(runs(redis_url)) == len(good), timeout=30, what="every good message run")
    listed = pex_cmd(runner.pex, runner.config, "dead", "list", "--json", redis_url=redis_url)
    reasons = " | ".join(r["error"] for r in json.loads(listed.stdout))
    for expected in (
        "neither JSON nor MessagePack",
        "expected a JSON/MessagePack object",
        "missing 'task'",
        "unknown task 'no_such_task'",
        "unknown task 'os:system'",
        "'args' must be an array",
        "arguments do not match",
        "invalid UTF-8",
        "unknown envelope key",
        "exceeds limits",
    ):
        assert expected in reasons, expected
    assert not Path("/tmp/taskqueue-pwned").exists()
    assert runner.alive() and runner.worker_pids() == pids  # no worker was replaced
    assert db.llen("tq:queue:default") == 0


def test_an_oversized_message_is_dead_lettered_under_its_own_id(make_runner: RunnerFactory, redis_url: str) -> None:
    """The producer holds the id: `dead list` must show it (and its task), and `dead retry` must say why not."""
    runner: Runner = make_runner(redis_url).start(expect_workers=2)
    big = json.dumps({"id": "big-1", "task": "record", "kwargs": {"n": 7, "pad": "x" * (2 << 20)}}).encode()
    store(redis_url).lpush("tq:queue:default", big)
    db = store(redis_url)
    wait_for(lambda: db.zcard("tq:dead:index") == 1, timeout=20, what="the oversized message dead-lettered")
    listed = json.loads(pex_cmd(runner.pex, runner.config, "dead", "list", "--json", redis_url=redis_url).stdout)
    assert [(r["id"], r["task"], r["truncated"]) for r in listed] == [("big-1", "record", True)]
    assert "exceeds limits.max_payload_size" in listed[0]["error"]
    again = pex_cmd(runner.pex, runner.config, "dead", "retry", "big-1", redis_url=redis_url)
    assert "big-1: cannot retry, the message was too large to keep whole" in again.stdout + again.stderr
    assert int(db.hget("tq:stats", "dead:default:record") or 0) == 1  # counted under its declared task


def test_client_refuses_unknown_tasks_and_full_queues(make_runner: RunnerFactory, redis_url: str) -> None:
    runner: Runner = make_runner(redis_url, workers=0)
    runner.config.write_text(
        runner.config.read_text().replace(
            "http:",
            "queues:\n  default: {priority: 5, "
            "max_length: 3}\n  high_priority: {priority: 9}"
            "\n  low_priority: {priority: 1}\nhttp:",
        )
    )
    runner.start()
    db = store(redis_url)
    wait_for(lambda: db.exists("tq:tasks"), timeout=20, what="the published task table")
    client = Client(redis_url)
    with pytest.raises(Exception, match="unknown task 'nope'"):
        client.enqueue("nope")
    client.enqueue_many([("record", (n,), {}) for n in range(3)])
    with pytest.raises(Exception, match="queue 'default' is full"):
        client.enqueue("record", 99)
    assert db.llen("tq:queue:default") == 3


def _post_json(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    status, raw = fetch(request)
    return status, json.loads(raw)


def test_cli_and_http_refuse_arguments_the_task_cannot_take(make_runner: RunnerFactory, redis_url: str) -> None:
    """Both check the task's signature (the CLI imports the one it enqueues; the runner reads them from its check
    apart), so a call that could only be dead-lettered ("missing a required argument") is refused at once: exit 2
    / HTTP 400, one line."""
    runner: Runner = make_runner(redis_url, workers=1, http={"port": 0}).start(expect_workers=1)
    enqueue = f"{http_url(runner)}/tasks/enqueue"

    refused = pex_cmd(runner.pex, runner.config, "enqueue", "record", "--args", "[1, 2, 3]", redis_url=redis_url)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == [
        "taskqueue: arguments do not match record(n, sleep_s=0.0): too many positional arguments"
    ]
    assert refused.stdout == ""
    status, body = _post_json(enqueue, {"task": "record", "args": [1], "kwargs": {"to": "a@example.com"}})
    assert (status, body) == (
        400,
        {"error": "arguments do not match record(n, sleep_s=0.0): got an unexpected keyword argument 'to'"},
    )
    status, body = _post_json(enqueue, {"task": "recorder", "kwargs": {"label": "x"}})  # a class: its __init__
    assert status == 400 and "missing a required argument: 'n'" in str(body["error"]), body

    fine = pex_cmd(runner.pex, runner.config, "enqueue", "record", "--args", "[7]", redis_url=redis_url)
    assert fine.returncode == 0, fine.stderr
    assert _post_json(enqueue, {"task": "recorder", "kwargs": {"n": 8}})[0] == 201
    assert _post_json(enqueue, {"task": "echo", "args": [9, 10], "kwargs": {"any": "thing"}})[0] == 201
    wait_for(lambda: runs(redis_url) == {7: 1, 8: 1}, timeout=20, what="the accepted calls to run")
    db = store(redis_url)
    wait_for(lambda: db.llen("tq:queue:default") == 0, timeout=20, what="the queue to drain")
    assert db.zcard("tq:dead:index") == 0  # nothing refused reached Redis
