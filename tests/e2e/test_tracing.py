"""Tracing through a real runner and its worker process: a task enqueued inside a span runs in a span of the
worker's that is that span's child (same trace, its parent id), named after the task and carrying its id,
name, queue and attempt; the task body runs inside it; a retry is a second child of the same enqueue span; a
task enqueued outside any span runs in none.

The worker exports its spans with OpenTelemetry's SDK, set up by the test job module testjobs/traced.py
(one JSON line per span, in a file). The pex carries only requirements.lock and requirements-jobs.txt, so
the SDK is not in it: this runner runs from the checkout in the dev venv, where the SDK is installed
(`python runner.py …`, the README's deployment without the pex); the README says how to bundle the SDK
into the pex instead."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace

from taskqueue.client import Client
from tests.conftest import REPO
from tests.e2e.harness import Runner, write_config
from tests.otel import tracer

TASKS = """
traced: {path: testjobs.traced:traced}
atraced: {path: testjobs.traced:atraced, queue: high_priority}
traced_retry: {path: testjobs.traced:traced_retry, max_retries: 2}
"""


def spans_of(path: Path, task_id: str) -> list[dict[str, Any]]:
    """The worker's exported spans of one task, in the order they ended."""
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []
    return [s for s in lines if s["attributes"].get("taskqueue.task.id") == task_id]


def ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_the_task_runs_in_a_child_span_of_its_enqueue(redis_url: str, tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    config = write_config(tmp_path, redis_url, workers=1, slots=1, tasks=TASKS)
    runner = Runner(
        REPO / "runner.py",
        config,
        redis_url,
        tmp_path / "runner.log",
        python=sys.executable,
        env={"TEST_SPANS_FILE": str(spans_file)},
    )
    runner.start(expect_workers=1)
    try:
        client = Client(redis_url)
        # A worker's span ends (and is exported, SimpleSpanProcessor) before the task is settled: once its
        # result is there, so is its span.
        untraced = client.enqueue("traced", 0)
        assert client.result(untraced, timeout=20)["trace_id"] == "0" * 32  # no span around the body
        assert spans_of(spans_file, untraced) == []

        with tracer().start_as_current_span("handle request") as parent:
            task_id = client.enqueue("traced", 1)
            async_id = client.enqueue("atraced", 2)
            retried = client.enqueue("traced_retry", 3)
        trace_id, parent_id = ids(parent)

        ran = client.result(task_id, timeout=20)
        (span,) = spans_of(spans_file, task_id)
        assert {k: span[k] for k in ("name", "kind", "trace_id", "parent_id", "status")} == {
            "name": "run traced",
            "kind": "CONSUMER",
            "trace_id": trace_id,
            "parent_id": parent_id,
            "status": "UNSET",
        }
        assert span["attributes"] == {
            "messaging.system": "taskqueue",
            "messaging.operation.type": "process",
            "messaging.destination.name": "default",
            "messaging.message.id": task_id,
            "taskqueue.task.id": task_id,
            "taskqueue.task.name": "traced",
            "taskqueue.queue": "default",
            "taskqueue.attempt": 1,
            "taskqueue.outcome": "succeeded",
        }
        assert span["pid"] in runner.worker_pids()  # exported by the worker process
        assert (ran["trace_id"], ran["span_id"]) == (trace_id, span["span_id"])  # the body ran inside it

        ran_async = client.result(async_id, timeout=20)
        (async_span,) = spans_of(spans_file, async_id)
        assert (async_span["parent_id"], async_span["attributes"]["taskqueue.queue"]) == (parent_id, "high_priority")
        assert ran_async["span_id"] == async_span["span_id"]

        assert client.result(retried, timeout=20)["attempt"] == 2
        first, second = spans_of(spans_file, retried)
        assert [s["attributes"]["taskqueue.attempt"] for s in (first, second)] == [1, 2]
        assert {s["parent_id"] for s in (first, second)} == {parent_id}  # the retry keeps the enqueue's context
        assert {s["trace_id"] for s in (first, second)} == {trace_id}
        assert (first["status"], first["attributes"]["taskqueue.outcome"]) == ("ERROR", "failed")
        assert (second["status"], second["attributes"]["taskqueue.outcome"]) == ("UNSET", "succeeded")
    finally:
        runner.stop()
