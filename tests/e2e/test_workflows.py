"""Workflows through the built PEX (SPEC §10): results flow along chains, groups collect in order, a chord's
callback runs once with every result; a dead-lettered step fails its workflow and `dead retry` resumes it;
worker SIGKILLs in the middle of many chords neither lose nor double a callback."""

from __future__ import annotations

import json
import os
import signal

import pytest

from taskqueue.canvas import Flow
from taskqueue.client import Client, chain, chord, group, step
from taskqueue.errors import TaskFailed
from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, lpush_cli, pex_cmd, store


@pytest.fixture
def runner(make_runner: RunnerFactory, redis_url: str) -> Runner:
    return make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)


def test_chain_group_chord_and_nesting_give_the_right_results(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    flows: dict[str, tuple[Flow, object]] = {
        "chain of 3": (chain(step("add", 1, 2), step("add", 10), step("add", 100)), 113),
        "group of 100": (group(step("add", n, n) for n in range(100)), [2 * n for n in range(100)]),
        "chord of 1,000": (chord([step("add", n) for n in range(1000)], step("total")), sum(range(1000))),
        "chain holding a group": (
            chain(step("add", 1, 1), group(step("add", 10), step("add", 20)), step("total")),
            (2 + 10) + (2 + 20),
        ),
        "group holding chains": (
            group(chain(step("add", 1), step("add", 2)), chain(step("add", 5), step("add", 5))),
            [3, 10],
        ),
    }
    ids = {name: client.enqueue_workflow(flow) for name, (flow, _) in flows.items()}
    for name, (_, expected) in flows.items():
        assert client.result(ids[name], timeout=60) == expected, name
        shown = client.workflow(ids[name])
        assert shown is not None and shown["state"] == "succeeded", name
        assert {s["state"] for s in shown["steps"]} == {"succeeded"}, name
    chain_steps = client.workflow(ids["chain of 3"])["steps"]  # type: ignore[index]
    assert [(s["id"], s["task"]) for s in chain_steps] == [(f"{ids['chain of 3']}.{n}", "add") for n in range(3)]
    assert client.result(f"{ids['chain of 3']}.1", timeout=5) == 13  # every step is a task with its own result


def test_a_step_whose_body_runs_is_running(runner: Runner, redis_url: str) -> None:
    """#28.7: SPEC §10's `running` step state (a sync and an async body, for the client and the CLI): found in
    its worker's in-flight hash, as status() finds a task, so starting a step costs no Redis command more."""
    client = Client(redis_url)
    db = store(redis_url)
    flow = client.enqueue_workflow(chord([step("gated", 1), step("agated", 2)], step("total")))
    wait_for(lambda: db.llen("test:started") == 2, timeout=20, what="both bodies to start")
    shown = client.workflow(flow)
    assert shown is not None
    assert (shown["state"], [s["state"] for s in shown["steps"]]) == ("running", ["running", "running", "pending"])
    cli = pex_cmd(runner.pex, runner.config, "workflow", "show", flow, "--json", redis_url=redis_url)
    assert cli.returncode == 0, cli.stderr
    assert [s["state"] for s in json.loads(cli.stdout)["steps"]] == ["running", "running", "pending"]
    db.set("test:gate", 1)
    assert client.result(flow, timeout=20) == 3
    shown = client.workflow(flow)
    assert shown is not None and [s["state"] for s in shown["steps"]] == ["succeeded"] * 3


def test_a_dead_step_fails_the_workflow_and_dead_retry_resumes_it(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    db = store(redis_url)
    flow = chain(step("add", 1, 1), step("flaky", key="k1"), step("add", 40))
    workflow_id = client.enqueue_workflow(flow)
    with pytest.raises(TaskFailed, match="step 1 failed: ValueError: k1 is not ready"):
        client.result(workflow_id, timeout=30)
    shown = client.workflow(workflow_id)
    assert shown is not None
    assert (shown["state"], [s["state"] for s in shown["steps"]]) == ("failed", ["succeeded", "failed", "cancelled"])
    db.set("test:flaky:k1", 1)
    retried = pex_cmd(runner.pex, runner.config, "dead", "retry", f"{workflow_id}.1", redis_url=redis_url)
    assert retried.returncode == 0, retried.stderr
    assert client.result(workflow_id, timeout=30) == 42  # resumed from the failed step: 2 → flaky → +40
    assert client.workflow(workflow_id)["state"] == "succeeded"  # type: ignore[index]
    shown_cli = pex_cmd(runner.pex, runner.config, "workflow", "show", workflow_id, "--json", redis_url=redis_url)
    assert [s["state"] for s in json.loads(shown_cli.stdout)["steps"]] == ["succeeded"] * 3
    text = pex_cmd(runner.pex, runner.config, "workflow", "show", workflow_id, redis_url=redis_url).stdout
    assert text.startswith(f"workflow {workflow_id}: succeeded")
    missing = pex_cmd(runner.pex, runner.config, "workflow", "show", "wf-nope", redis_url=redis_url)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "taskqueue: no workflow wf-nope (unknown, or expired after its result_ttl)",
    )
    counted = {k.decode(): int(v) for k, v in db.hgetall("tq:stats").items() if k.startswith(b"workflows:")}
    assert counted == {"workflows:started": 1, "workflows:failed": 1, "workflows:resumed": 1, "workflows:succeeded": 1}


CHORDS = int(os.environ.get("TQ_CHORDS", "40"))  # TQ_CHORDS=200 for the full fault run


def test_sigkills_of_workers_and_the_runner_in_the_middle_of_chords_neither_lose_nor_double_a_callback(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    first = make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)
    client = Client(redis_url)
    db = store(redis_url)
    ids = [
        client.enqueue_workflow(chord([step("add", n, sleep_s=0.05) for n in range(20)], step("total", tag=f"c{c}")))
        for c in range(CHORDS)
    ]
    steps = CHORDS * 20

    def done() -> int:
        return int(db.hget("tq:stats", "processed:default:add") or 0)

    for goal in (steps // 8, steps // 4):  # two worker SIGKILLs
        wait_for(lambda g=goal: done() >= g, timeout=60, what=f"{goal} steps done")
        os.kill(first.worker_pids()[0], signal.SIGKILL)
        wait_for(lambda: len(first.worker_pids()) == 2, timeout=20, what="a replacement worker")
    wait_for(lambda: done() >= steps // 2, timeout=60, what="half the steps")
    assert db.hlen("test:callbacks") < CHORDS, "the runner kill came too late to test anything"
    first.kill_all()  # runner and workers at once, mid-run: their leases expire, the next runner recovers
    make_runner(redis_url, workers=2, slots=10).start(expect_workers=2)
    for workflow_id in ids:
        assert client.result(workflow_id, timeout=90) == sum(range(20))
    # Enqueued exactly once: one first attempt per callback. A callback whose worker was SIGKILLed while
    # it ran is run again as its next attempt (at-least-once, as any task); that is counted, not hidden.
    attempts = {k.decode(): int(v) for k, v in db.hgetall("test:callback_attempts").items()}
    assert {tag for tag in attempts if tag.endswith(":1")} == {f"c{c}:1" for c in range(CHORDS)}
    assert set(attempts.values()) == {1}, f"an attempt of a callback ran twice: {attempts}"
    reruns = sum(attempts.values()) - CHORDS
    print(f"\n{CHORDS} chords of 20 under 2 worker SIGKILLs and a runner SIGKILL: {reruns} callback re-run(s)")
    inputs = {v.decode() for v in db.hgetall("test:callback_input").values()}
    assert inputs == {repr(list(range(20)))}  # every callback saw the complete list
    assert {client.workflow(w)["state"] for w in ids} == {"succeeded"}  # type: ignore[index]


YAML_WORKFLOWS = """
workflows:
  sum_up:
    chord:
      header: [{task: add, args: [1]}, {task: add, args: [2]}, add]
      callback: total
  pipeline:
    chain:
      - add
      - group: [{task: add, args: [10]}, {task: add, args: [20]}]
      - {task: total, kwargs: {tag: pipeline}}
schedules:
  every_second: {workflow: pipeline, every: 1s, args: [5]}
"""


def test_yaml_workflows_start_by_name_from_every_producer_and_from_a_schedule(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    """A YAML workflow's name is enqueued like a task's; the message's args go to its first step(s)."""
    runner = make_runner(redis_url, workers=2, slots=10, extra=YAML_WORKFLOWS).start(expect_workers=2)
    client = Client(redis_url)
    db = store(redis_url)
    # the header's steps get the message's args first: add(100, 1), add(100, 2), add(100)
    by_client = client.enqueue("sum_up", 100)
    assert by_client.startswith("wf-")
    assert client.result(by_client, timeout=30) == 101 + 102 + 100
    cli = pex_cmd(runner.pex, runner.config, "enqueue", "sum_up", "--args", "[0]", redis_url=redis_url)
    assert cli.returncode == 0, cli.stderr
    assert client.result(cli.stdout.strip(), timeout=30) == 1 + 2 + 0
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    lpush_cli(port, "tq:queue:default", [b'{"task": "sum_up", "id": "from-redis-cli", "args": [10]}'])
    assert client.result("wf-from-redis-cli", timeout=30) == 11 + 12 + 10
    # every second: pipeline(5) = total([5 + 10, 5 + 20]) = 40, started under the fire's own id
    wait_for(lambda: db.hget("test:callbacks", "pipeline") is not None, timeout=20, what="a scheduled workflow")
    fired = [k.decode() for k in db.keys("tq:workflow:wf-every_second@*")]
    assert fired, "the schedule's workflow is kept under wf-<schedule>@<fire time>"
    assert client.result(fired[0].removeprefix("tq:workflow:"), timeout=30) == 40
    shown = client.workflow(fired[0].removeprefix("tq:workflow:"))
    assert shown is not None and [s["task"] for s in shown["steps"]] == ["add", "add", "add", "total"]


def test_a_group_of_ten_thousand_steps_completes(runner: Runner, redis_url: str) -> None:
    client = Client(redis_url)
    workflow_id = client.enqueue_workflow(group(step("add", n) for n in range(10_000)))
    assert client.result(workflow_id, timeout=120) == list(range(10_000))
    shown = client.workflow(workflow_id)
    assert shown is not None and shown["state"] == "succeeded" and len(shown["steps"]) == 10_000
