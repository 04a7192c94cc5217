"""Tracing (SPEC §12) without Redis: the producer puts the current span's W3C traceparent into every message
(`trace`), only when there is a valid span; the envelope keeps it across retries; the worker's span of an
attempt continues it, with the task's id, name, queue and attempt. Without opentelemetry in use nothing of it
is imported. (tests/e2e/test_tracing.py: the same through a real runner and worker process.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import msgpack
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode

from taskqueue import envelope, tracing
from taskqueue.canvas import chain, step
from taskqueue.store.keys import Keys, split_member
from taskqueue.store.producer import Producer, Push, Routes, TaskRoute
from tests.conftest import REPO
from tests.otel import exporter, tracer


def producer() -> Producer:
    routes = Routes({"send": TaskRoute("default"), "other": TaskRoute("low")}, {"default": None, "low": None})
    return Producer(Keys("tq"), routes)


def messages(pushes: list[Push]) -> list[dict[str, object]]:
    """The messages of plain and delayed pushes, decoded."""
    found = []
    for push in pushes:
        sent = [split_member(m)[1] for m in push.args[2::2]] if push.kind == "delayed" else push.args
        found += [msgpack.unpackb(m) for m in sent]
    return found


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def traceparent_of(span: trace.Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def test_an_enqueue_inside_a_span_carries_its_context_and_outside_none() -> None:
    exporter().clear()
    plain = messages(producer().plan([("send", (1,), {})])[1])
    assert "trace" not in plain[0]

    with tracer().start_as_current_span("handle request") as span:
        _, pushes = producer().plan([("send", (1,), {}), ("other", (), {"a": 1}), ("send", (2,), {})])
        sent = messages(pushes)
        later = messages(producer().plan([("send", (3,), {})], delay_s=30)[1])  # the delayed set, too
    assert len(sent) == 3
    assert {m["trace"] for m in [*sent, *later]} == {traceparent_of(span)}
    assert traceparent_of(span).endswith(("-01", "-03"))  # sampled (03: and a random trace id, W3C level 2)

    unsampled = trace.SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=False, trace_flags=trace.TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unsampled)):
        assert messages(producer().plan([("send", (), {})])[1])[0]["trace"] == f"00-{0x1F:032x}-{0x2F:016x}-00"
    with trace.use_span(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)):  # a current span, but no valid one
        assert "trace" not in messages(producer().plan([("send", (), {})])[1])[0]


def test_every_step_of_a_workflow_carries_the_context() -> None:
    with tracer().start_as_current_span("start workflow") as span:
        _, push = producer().workflow(chain(step("send", 1), step("other")))
    args = list(push.args)
    heads = [args[args.index(f"p:{index}") + 1] for index in (0, 1)]  # each step's message, around its input
    assert all(traceparent_of(span).encode() in head for head in heads)


def test_the_envelope_keeps_the_context_across_retries_and_refuses_a_bad_one() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    raw = envelope.pack("send", "t1", [1], {}, 1.0, trace=parent)
    env = envelope.decode(raw, 1 << 20)
    assert env.trace == parent
    env.attempt = 1  # what the worker's retry does, then env.encode()
    again = envelope.decode(env.encode(), 1 << 20)
    assert (again.trace, again.attempt) == (parent, 1)
    assert envelope.decode(b'{"task": "send", "trace": "%s"}' % parent.encode(), 1 << 20).trace == parent
    for bad in (
        b'{"task": "send", "trace": 7}',
        b'{"task": "send", "trace": ""}',
        b'{"task": "send", "trace": "%s"}' % (b"0" * 129),
    ):
        with pytest.raises(envelope.InvalidEnvelope, match="'trace' must be a W3C traceparent"):
            envelope.decode(bad, 1 << 20)


def test_the_attempts_span_continues_the_enqueue_and_records_a_failure() -> None:
    spans = exporter()
    spans.clear()
    with tracer().start_as_current_span("enqueue") as parent:
        context = tracing.traceparent()
    assert context is not None
    with tracing.task_span(context, "t-1", "send", "default", 2) as span:
        assert trace.get_current_span() is span  # the task body's own spans are its children
        assert tracing.traceparent() == traceparent_of(span)
        tracing.settled(span, ValueError("boom"), "ValueError: boom")
    with tracing.task_span(context, "t-2", "send", "default", 1) as ok:
        tracing.settled(ok, None)
    with pytest.raises(KeyboardInterrupt), tracing.task_span(context, "t-3", "send", "default", 1):
        raise KeyboardInterrupt  # told to stop: the span ends, the message is handed back
    finished = {attributes(s)["taskqueue.task.id"]: s for s in spans.get_finished_spans() if s.name == "run send"}
    failed, succeeded, stopped = finished["t-1"], finished["t-2"], finished["t-3"]
    for span in finished.values():
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.kind == SpanKind.CONSUMER
    assert attributes(failed) == {
        "messaging.system": "taskqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": "t-1",
        "taskqueue.task.id": "t-1",
        "taskqueue.task.name": "send",
        "taskqueue.queue": "default",
        "taskqueue.attempt": 2,
        "taskqueue.outcome": "failed",
    }
    assert (failed.status.status_code, failed.status.description) == (StatusCode.ERROR, "ValueError: boom")
    assert [e.name for e in failed.events] == ["exception"]
    assert (succeeded.status.status_code, attributes(succeeded)["taskqueue.outcome"]) == (StatusCode.UNSET, "succeeded")
    assert attributes(stopped)["taskqueue.outcome"] == "handed back"


def test_an_unreadable_context_starts_a_new_trace() -> None:
    spans = exporter()
    spans.clear()
    with tracing.task_span("not a traceparent", "t-9", "send", "default", 1) as span:
        tracing.settled(span, None)
    (found,) = spans.get_finished_spans()
    assert found.parent is None and attributes(found)["taskqueue.task.id"] == "t-9"


PLAN_ONE = """
import sys
import msgpack
import redis  # redis-py >= 8 imports opentelemetry itself when it is installed (its own observability)
before = {m for m in sys.modules if m.startswith("opentelemetry")}
import taskqueue.client, taskqueue.worker.execute, taskqueue.worker.worker
from taskqueue.store.keys import Keys
from taskqueue.store.producer import Producer, Routes, TaskRoute
_, pushes = Producer(Keys("tq"), Routes({"send": TaskRoute("default")}, {"default": None})).plan([("send", (1,), {})])
assert "trace" not in msgpack.unpackb(pushes[0].args[0])
added = sorted(m for m in sys.modules if m.startswith("opentelemetry") and m not in before)
assert added == [], added
"""

ABSENT = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):  # as in an environment without the package
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "absent"])
def test_without_opentelemetry_in_use_taskqueue_imports_and_adds_nothing(installed: bool) -> None:
    """A fresh interpreter, with the package installed (taskqueue imports none of it; the enqueue outside any
    span adds no key) and without it (the same, and a message carrying a context runs without a span)."""
    script = (
        PLAN_ONE
        if installed
        else ABSENT
        + PLAN_ONE
        + textwrap.dedent("""
        from taskqueue import tracing
        with tracing.task_span("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "t", "send", "q", 1) as span:
            assert span is None
        tracing.settled(span, ValueError("ignored"))
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
    """)
    )
    done = subprocess.run(
        [sys.executable, "-c", script + "print('clean')"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "clean"), done.stderr
