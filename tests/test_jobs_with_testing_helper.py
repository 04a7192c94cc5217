"""The shipped example jobs (jobs/, declared in the reference task-queue.yaml), tested the way a user tests their
own: the `taskqueue_test` fixture of taskqueue.testing runs that YAML on a private redis-server with the real
runner and worker processes (the plugin is active through tests/conftest.py's pytest_plugins)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from taskqueue.client import chain, chord, group, step
from taskqueue.testing import TaskQueueTest, TaskQueueTestFailure

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("TASKQUEUE_TEST_REDIS_URL"),
    reason="redis-server is not installed (.ci/run installs it)",
)


def test_every_shipped_job_returns_its_result(taskqueue_test: TaskQueueTest) -> None:
    tq = taskqueue_test
    email = tq.enqueue("send_email", to="a@example.com", subject="Hi")
    note = tq.enqueue("notify", "ops", "deploy done")  # async
    report = tq.enqueue("build_report", kind="weekly")  # a class with execute()
    pong = tq.enqueue("ping", target="cache")
    size = tq.enqueue("describe_upload", name="report.pdf", size_bytes=1234567)  # imports humanize
    tq.drain()
    # drained: every result is there already (timeout=0 looks once)
    assert tq.result(email, timeout=0) == {"to": "a@example.com", "subject": "Hi", "status": "sent"}
    assert tq.result(note, timeout=0) == "ops: deploy done"
    built = tq.result(report, timeout=0)
    assert built["report"] == "weekly" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", built["built_at"])
    assert tq.result(pong, timeout=0) == "pong from cache"
    assert tq.result(size, timeout=0) == "report.pdf: 1.2 MB"
    assert tq.dead() == []


def test_flaky_succeeds_on_its_retry_and_drain_waits_for_the_backoff(taskqueue_test: TaskQueueTest) -> None:
    task_id = taskqueue_test.enqueue("flaky", fail_times=2)  # retry_backoff base 500ms: two delayed retries
    taskqueue_test.drain(timeout=30)
    assert taskqueue_test.result(task_id, timeout=0) == 3  # the attempt that succeeded
    assert taskqueue_test.pending().empty


def test_workflows_of_shipped_jobs(taskqueue_test: TaskQueueTest) -> None:
    client = taskqueue_test.client
    piped = client.enqueue_workflow(chain(step("ping", target="db"), step("notify", "ops")))  # result prepended
    fanned = client.enqueue_workflow(group(step("ping", target=t) for t in ("a", "b", "c")))
    counted = client.enqueue_workflow(chord([step("flaky", fail_times=0) for _ in range(3)], step("ping")))
    taskqueue_test.drain(timeout=30)
    assert taskqueue_test.result(piped, timeout=0) == "pong from db: ops"
    assert taskqueue_test.result(fanned, timeout=0) == ["pong from a", "pong from b", "pong from c"]
    assert taskqueue_test.result(counted, timeout=0) == "pong from [1, 1, 1]"  # the header's results, as target
    assert client.workflow(piped)["state"] == "succeeded"  # type: ignore[index]


def test_a_rejected_email_is_dead_lettered_with_its_reason(taskqueue_test: TaskQueueTest) -> None:
    task_id = taskqueue_test.enqueue("send_email", to="nobody")
    taskqueue_test.drain(raise_on_dead=False)  # expected: look at it instead
    (dead,) = taskqueue_test.dead()
    assert (dead.id, dead.task, dead.attempts) == (task_id, "send_email", 1)
    assert dead.error == "rejected: not an e-mail address: 'nobody'"  # Reject: no retries, no traceback
    taskqueue_test.drain()  # already seen: a later drain does not raise for it again


def test_a_failing_task_raises_with_its_id_task_and_traceback(taskqueue_test: TaskQueueTest) -> None:
    task_id = taskqueue_test.enqueue("flaky", fail_times=99)  # fails every attempt: dead after max_retries 3
    with pytest.raises(TaskQueueTestFailure) as raised:
        taskqueue_test.drain(timeout=30)
    message = str(raised.value)
    assert f"task 'flaky' (id {task_id}, queue default, 4 attempt(s)): RuntimeError: transient failure" in message
    assert "Traceback (most recent call last):" in message
    assert re.search(r'File ".*jobs/email\.py", line \d+, in flaky\n +raise RuntimeError', message), message
    assert message.rstrip().endswith("RuntimeError: transient failure on attempt 4")
    with pytest.raises(TaskQueueTestFailure, match=rf"(?s)task 'flaky' \(id {task_id}.*jobs/email\.py"):
        taskqueue_test.result(task_id)  # result() says the same, not only "failed"
